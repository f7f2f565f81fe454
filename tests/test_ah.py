"""AH (RFC 4302) cross-checks of the engine against independent implementations.

Oracles:
- scapy's IPsec layer (scapy.layers.ipsec.SecurityAssociation(AH, ...)) in both directions:
  engine encrypt -> scapy verify + decapsulate, and scapy encrypt -> engine decrypt, for
  HMAC-MD5-96, HMAC-SHA1-96, HMAC-SHA2-256-128, -384-192, -512-256; transport mode over
  IPv4 and IPv6, tunnel mode over all four outer/inner family combinations. The engine's
  output is also compared byte for byte with scapy's (scapy given the same outer header
  fields: identification = sequence number (never 0), DF, DSCP/ECN copied, TTL 64). scapy supports
  ESN on AH (RFC 4302 2.5.1: the high 32 bits appended to the ICV input) when given the
  high bits, so the ESN tests use it too, across the 2^32 boundary.
  scapy's mutable-field handling (zero_mutable_fields) covers IPv4 options and IPv6
  hop-by-hop / destination options, which the option tests use.
- `ah_oracle` below: AH written out from RFC 4302 with `hmac`, for what scapy cannot
  produce: an 8-byte-aligned AH over IPv4 (Linux's default without `flag align4`) and
  non-zero ICV padding (RFC 4302 3.3.3.2.1: its content is the sender's choice and it is
  part of the ICV input).

Where scapy and RFC 4302 differ (scapy rotates a routing header's addresses when signing
even when segments left is already 0; it does not predict the final destination of an
IPv4 source route), the tests use the engine-only round trip and say so.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR, IPOption_Router_Alert, \
    IPOption_RR
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, \
    IPv6ExtHdrRouting, RouterAlert
from scapy.layers.ipsec import AH, ESP, IPSecIntegrityError, SecurityAssociation
from scapy.packet import Raw

from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TRANSPORT, MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig, Selector

from oracle import INNER, OUTER, ipv4_checksum, key, run

ip = ipaddress.ip_address
net = ipaddress.ip_network

# (Linux name, ICV bits, scapy name, key bytes)
ALGS = [("hmac(md5)", 96, "HMAC-MD5-96", 16), ("hmac(sha1)", 96, "HMAC-SHA1-96", 20),
        ("hmac(sha256)", 128, "SHA2-256-128", 32), ("hmac(sha384)", 192, "SHA2-384-192", 48),
        ("hmac(sha512)", 256, "SHA2-512-256", 64)]
_DIGESTS = {"hmac(md5)": hashlib.md5, "hmac(sha1)": hashlib.sha1,
            "hmac(sha256)": hashlib.sha256, "hmac(sha384)": hashlib.sha384,
            "hmac(sha512)": hashlib.sha512}
_SCAPY = {a: s for a, _, s, _ in ALGS}

# (mode, outer family, inner family)
TOPOLOGIES = ([(MODE_TUNNEL, o, i) for o in (4, 6) for i in (4, 6)]
              + [(MODE_TRANSPORT, f, f) for f in (4, 6)])


def topo_id(t) -> str:
    mode, o, i = t
    return f"tunnel-{i}in{o}" if mode == MODE_TUNNEL else f"transport-v{o}"


def ah_sa(auth: str = "hmac(sha1)", bits: int = 96, mode: int = MODE_TUNNEL, outer: int = 4,
          spi: int = 0x2001, **kw) -> SAConfig:
    src, dst = OUTER[outer]
    klen = next(k for a, _, _, k in ALGS if a == auth)
    return SAConfig(src=ip(src), dst=ip(dst), proto=PROTO_AH, spi=spi, mode=mode, auth=auth,
                    auth_key=key(klen, 5), icv_bits=bits, **kw)


def scapy_ah(cfg: SAConfig, tunnel_header=None, seq_num: int = 1, esn_hi: int = 0):
    if tunnel_header is None and cfg.mode == MODE_TUNNEL:
        tunnel_header = (IP(src=str(cfg.src), dst=str(cfg.dst)) if cfg.dst.version == 4
                         else IPv6(src=str(cfg.src), dst=str(cfg.dst)))
    return SecurityAssociation(AH, spi=cfg.spi, seq_num=seq_num, auth_algo=_SCAPY[cfg.auth],
                               auth_key=cfg.auth_key, tunnel_header=tunnel_header,
                               esn_en=cfg.esn, esn=esn_hi)


def parse(b: bytes):
    return IP(b) if b[0] >> 4 == 4 else IPv6(b)


def packets(mode: int, outer: int, inner: int) -> list[bytes]:
    """Inner packets (tunnel) or packets between the SA's endpoints (transport): UDP, TCP,
    ICMP, sizes 0..~200 bytes of payload, assorted DSCP/ECN and DF."""
    src, dst = INNER[inner] if mode == MODE_TUNNEL else OUTER[outer]
    out = []
    for k, n in enumerate((0, 1, 3, 8, 13, 40, 99, 200)):
        tos = [0x00, 0x01, 0x02, 0xB8, 0x2A, 0x00, 0xFE, 0x10][k]
        if inner == 4:
            h = IP(src=src, dst=dst, tos=tos, ttl=30 + k, id=1000 + k,
                   flags="DF" if k % 2 else 0)
        else:
            h = IPv6(src=src, dst=dst, tc=tos, fl=0x12345 * k & 0xFFFFF, hlim=30 + k)
        l4 = [UDP(sport=1000 + k, dport=53), TCP(sport=2000 + k, dport=80, flags="PA"),
              ICMP() if inner == 4 else UDP(sport=7, dport=7)][k % 3]
        out.append(bytes(h / l4 / Raw(bytes((j * 7 + k) & 0xFF for j in range(n)))))
    return out


def ah_offset(pkt: bytes) -> int:
    """Offset of the AH header: after the IPv4 header / IPv6 header and extension headers."""
    if pkt[0] >> 4 == 4:
        assert pkt[9] == 51
        return (pkt[0] & 0x0F) * 4
    nh, p = pkt[6], 40
    while nh in (0, 43, 60):
        nh, p = pkt[p], p + (pkt[p + 1] + 1) * 8
    assert nh == 51
    return p


def outer_fields(cfg: SAConfig, inner_pkt: bytes, seq: int):
    """The tunnel header the engine is expected to build (CONTRACT-SPU.md encrypt)."""
    v = inner_pkt[0] >> 4
    tos = inner_pkt[1] if v == 4 else ((inner_pkt[0] & 0x0F) << 4) | (inner_pkt[1] >> 4)
    if cfg.dst.version == 4:
        df = v == 6 or bool(inner_pkt[6] & 0x40)
        # identification: the low 16 bits of the sequence number, 1 instead of 0 (a raw
        # IP_HDRINCL socket would replace 0 after the ICV covered it)
        return IP(src=str(cfg.src), dst=str(cfg.dst), tos=tos, ttl=64,
                  id=(seq & 0xFFFF) or 1, flags="DF" if df else 0)
    return IPv6(src=str(cfg.src), dst=str(cfg.dst), tc=tos, fl=0, hlim=64)


def fix_v4_checksum(b: bytearray, o: int = 0) -> None:
    if b[o] >> 4 == 4:
        hl = (b[o] & 0x0F) * 4
        b[o + 10:o + 12] = b"\0\0"
        struct.pack_into("!H", b, o + 10, ipv4_checksum(bytes(b[o:o + hl])))


def pair(cfg: SAConfig, **inb) -> tuple[Engine, Engine]:
    e, d = Engine(), Engine()
    e.install(cfg, "out")
    d.install(SAConfig(**{**cfg.__dict__, **inb}), "in")
    return e, d


# ---------------------------------------------------------------------------------------
# An independent AH signer (RFC 4302), no options / extension headers
# ---------------------------------------------------------------------------------------
def ah_oracle(cfg: SAConfig, pkt: bytes, seq: int, align: int | None = None,
              pad: bytes | None = None) -> bytes:
    """Transport-mode AH over a plain IPv4 / IPv6 packet with the full sequence number."""
    v = pkt[0] >> 4
    hl = 20 if v == 4 else 40
    icv = cfg.icv_bits // 8
    align = align or (4 if v == 4 else 8)
    ah_len = -(-(12 + icv) // align) * align
    hdr, payload = bytearray(pkt[:hl]), pkt[hl:]
    nh = hdr[9] if v == 4 else hdr[6]
    if pad is None:
        pad = bytes(ah_len - 12 - icv)
    assert len(pad) == ah_len - 12 - icv
    ah = bytearray(struct.pack("!BBHII", nh, ah_len // 4 - 2, 0, cfg.spi, seq & 0xFFFFFFFF))
    ah += bytes(icv) + pad
    if v == 4:
        hdr[9] = 51
        struct.pack_into("!H", hdr, 2, hl + len(ah) + len(payload))
        z = bytearray(hdr)
        z[1] = z[6] = z[7] = z[8] = z[10] = z[11] = 0      # RFC 4302 3.3.3.1.1.1
    else:
        hdr[6] = 51
        struct.pack_into("!H", hdr, 4, len(ah) + len(payload))
        z = bytearray(hdr)
        z[0] &= 0xF0
        z[1] = z[2] = z[3] = z[7] = 0                       # RFC 4302 3.3.3.1.2.1
    msg = bytes(z) + bytes(ah) + payload + (struct.pack("!I", seq >> 32) if cfg.esn else b"")
    ah[12:12 + icv] = hmac.new(cfg.auth_key, msg, _DIGESTS[cfg.auth]).digest()[:icv]
    fix_v4_checksum(hdr)
    return bytes(hdr) + bytes(ah) + payload


# ---------------------------------------------------------------------------------------
# Algorithms x topologies, both directions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("topo", TOPOLOGIES, ids=topo_id)
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a[2])
def test_engine_encrypt_scapy_verifies(alg, topo):
    auth, bits, _, _ = alg
    mode, outer, inner = topo
    cfg = ah_sa(auth, bits, mode, outer)
    e, _ = pair(cfg)
    pkts = packets(mode, outer, inner)
    enc, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NONE] * len(pkts)
    icv = bits // 8
    for seq, (p, c) in enumerate(zip(pkts, enc), 1):
        a = ah_offset(c)
        ah_len = (c[a + 1] + 2) * 4
        align = 4 if outer == 4 else 8          # RFC 4302 2.6: only as much padding as needed
        assert ah_len == -(-(12 + icv) // align) * align
        assert c[a + 12 + icv:a + ah_len] == bytes(ah_len - 12 - icv)
        assert struct.unpack("!II", c[a + 4:a + 12]) == (cfg.spi, seq)
        # byte for byte what scapy builds with the same outer header
        th = outer_fields(cfg, p, seq) if mode == MODE_TUNNEL else None
        expect = scapy_ah(cfg, tunnel_header=th, seq_num=seq).encrypt(parse(p))
        assert c == bytes(expect), (parse(c).show(dump=True), expect.show(dump=True))
        # and scapy verifies it and gets the original back
        dec = scapy_ah(cfg).decrypt(parse(c))
        assert bytes(dec) == p
    st = e.sa_stats(0)
    assert st["packets"] == len(pkts) and st["seq_out"] == len(pkts)


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=topo_id)
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a[2])
def test_scapy_encrypt_engine_decrypts(alg, topo):
    auth, bits, _, _ = alg
    mode, outer, inner = topo
    cfg = ah_sa(auth, bits, mode, outer)
    _, d = pair(cfg)
    pkts = packets(mode, outer, inner)
    sa = scapy_ah(cfg)
    wire = [bytes(sa.encrypt(parse(p))) for p in pkts]
    out, drops = run(d, wire, "decrypt")
    assert drops == [Drop.NONE] * len(pkts)
    assert out == pkts
    st = d.sa_stats(0)
    assert st["packets"] == len(pkts) and st["replay_top"] == len(pkts)
    assert d.stats()["packets_out"] == len(pkts)


# ---------------------------------------------------------------------------------------
# ESN (RFC 4302 2.5.1): across the 2^32 boundary
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("topo", [TOPOLOGIES[0], TOPOLOGIES[3], TOPOLOGIES[4], TOPOLOGIES[5]],
                         ids=topo_id)
def test_esn_both_directions(topo):
    mode, outer, inner = topo
    hi = 5
    cfg = ah_sa("hmac(sha256)", 128, mode, outer, esn=True, oseq=(hi << 32) | 0xFFFFFFFD)
    e, d = pair(cfg, seq=(hi << 32) | 0xFFFFFFF0)
    pkts = packets(mode, outer, inner)[:5]
    seqs = [((hi << 32) | 0xFFFFFFFE) + k for k in range(5)]   # 5:fffffffe .. 6:2
    enc, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NONE] * 5
    for p, c, q in zip(pkts, enc, seqs):
        lo, h = q & 0xFFFFFFFF, q >> 32
        a = ah_offset(c)
        assert struct.unpack("!I", c[a + 8:a + 12])[0] == lo     # only the low half is sent
        th = outer_fields(cfg, p, q) if mode == MODE_TUNNEL else None
        expect = scapy_ah(cfg, tunnel_header=th, seq_num=lo, esn_hi=h).encrypt(parse(p))
        assert c == bytes(expect)
        assert bytes(scapy_ah(cfg, esn_hi=h).decrypt(parse(c))) == p
        with pytest.raises(IPSecIntegrityError):                 # the high bits are in the ICV
            scapy_ah(cfg, esn_hi=h + 1).decrypt(parse(c))
        if mode == MODE_TRANSPORT:                               # second opinion
            assert c == ah_oracle(cfg, p, q)
    # scapy -> engine, the receiver inferring the high bits (RFC 4303 A2)
    wire = [bytes(scapy_ah(cfg, seq_num=q & 0xFFFFFFFF, esn_hi=q >> 32).encrypt(parse(p)))
            for p, q in zip(pkts, seqs)]
    out, drops = run(d, wire, "decrypt")
    assert drops == [Drop.NONE] * 5 and out == pkts
    assert d.sa_stats(0)["replay_top"] == seqs[-1]
    # with the wrong high bits (as sent from the previous 2^32 block) the ICV fails
    old = bytes(scapy_ah(cfg, seq_num=3, esn_hi=hi).encrypt(parse(pkts[0])))
    assert run(d, [old], "decrypt")[1] == [Drop.AUTH_FAILED]


def test_esn_outbound_wraps_only_with_esn():
    cfg = ah_sa(mode=MODE_TRANSPORT, oseq=0xFFFFFFFE)
    e = Engine()
    e.install(cfg, "out")
    pkts = packets(MODE_TRANSPORT, 4, 4)[:3]
    _, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NONE, Drop.SEQ_EXHAUSTED, Drop.SEQ_EXHAUSTED]
    e2 = Engine()
    e2.install(ah_sa(mode=MODE_TRANSPORT, oseq=0xFFFFFFFE, esn=True), "out")
    enc, drops = run(e2, pkts, "encrypt")
    assert drops == [Drop.NONE] * 3
    assert [struct.unpack("!I", c[28:32])[0] for c in enc] == [0xFFFFFFFF, 0, 1]


# ---------------------------------------------------------------------------------------
# Anti-replay
# ---------------------------------------------------------------------------------------
def test_replay():
    cfg = ah_sa(mode=MODE_TRANSPORT, replay_window=32)
    e, d = pair(cfg)
    pkts = [bytes(IP(src=OUTER[4][0], dst=OUTER[4][1]) / UDP(sport=k, dport=9) / Raw(b"r"))
            for k in range(100)]
    enc, _ = run(e, pkts, "encrypt")                       # sequence numbers 1..100
    out, drops = run(d, [enc[0], enc[0], enc[1]], "decrypt")
    assert drops == [Drop.NONE, Drop.REPLAY, Drop.NONE]     # duplicate inside one batch
    assert run(d, [enc[1]], "decrypt")[1] == [Drop.REPLAY]  # duplicate in a later batch
    out, drops = run(d, [enc[99], enc[59], enc[68], enc[68]], "decrypt")
    # top = 100, W = 32: 60 is too old, 69 is inside and new, then seen
    assert drops == [Drop.NONE, Drop.REPLAY, Drop.NONE, Drop.REPLAY]
    st = d.sa_stats(0)
    assert st["packets"] == 4 and st["dropped"]["replay"] == 4 and st["replay_top"] == 100
    # sequence number 0 is never valid without ESN
    zero = bytes(scapy_ah(cfg, seq_num=0).encrypt(IP(pkts[0])))
    assert run(d, [zero], "decrypt")[1] == [Drop.REPLAY]
    # a packet that failed its ICV does not mark its number seen nor move the window
    assert run(d, [enc[50]], "decrypt")[1] == [Drop.REPLAY]  # too old: before the ICV
    bad = bytearray(enc[80])
    bad[-1] ^= 1
    assert run(d, [bytes(bad), enc[80]], "decrypt")[1] == [Drop.AUTH_FAILED, Drop.NONE]
    fresh = bytes(scapy_ah(cfg, seq_num=200).encrypt(IP(pkts[0])))
    bad = bytearray(fresh)
    bad[-1] ^= 1
    assert run(d, [bytes(bad), fresh], "decrypt")[1] == [Drop.AUTH_FAILED, Drop.NONE]


# ---------------------------------------------------------------------------------------
# Tampering: every bit of every immutable field matters, mutable fields do not
# ---------------------------------------------------------------------------------------
PASS = "pass"
DROPPED = "dropped"    # structural damage: some drop, reason not pinned down


def expected(c: bytes, j: int, bit: int, mode: int):
    """What flipping bit `bit` of byte j of AH packet c must do (checksum refreshed)."""
    v = c[0] >> 4
    a = ah_offset(c)
    if v == 4 and j < 20:
        if j == 0 or j in (2, 3):
            return None                           # version / IHL / total length: skip
        if j in (1, 8):
            return PASS                           # TOS, TTL
        if j == 6:
            return PASS if bit in (0x80, 0x40) else Drop.MALFORMED   # DF ok, MF/offset: frag
        if j == 7:
            return Drop.MALFORMED                 # fragment offset: not reassembled
        if j == 9:
            return Drop.NO_SA                     # protocol
        if j in (10, 11):
            return None                           # checksum (recomputed after every flip)
        if 16 <= j < 20:
            return Drop.NO_SA                     # destination: SA lookup key
        return Drop.AUTH_FAILED                   # identification, source
    if v == 6 and j < 40:
        if j == 0:
            return None if bit >= 0x10 else PASS  # version / traffic class
        if j in (1, 2, 3, 7):
            return PASS                           # traffic class, flow label, hop limit
        if j in (4, 5):
            return None                           # payload length
        if j == 6:
            return Drop.NO_SA                     # next header
        if j >= 24:
            return Drop.NO_SA
        return Drop.AUTH_FAILED
    if j == a + 1:
        return DROPPED                            # AH payload length
    if a + 4 <= j < a + 8:
        return Drop.NO_SA                         # SPI
    return Drop.AUTH_FAILED                       # AH fields, ICV, payload, inner header


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=topo_id)
def test_tampering(topo):
    mode, outer, inner = topo
    cfg = ah_sa("hmac(sha256)", 128, mode, outer, replay_window=0)   # no replay: same seq
    e, d = pair(cfg)
    p = packets(mode, outer, inner)[4]
    c = run(e, [p], "encrypt")[0][0]
    variants, expect = [], []
    for j in range(len(c)):
        for bit in (1, 2, 4, 8, 16, 32, 64, 128):
            x = expected(c, j, bit, mode)
            if x is None:
                continue
            t = bytearray(c)
            t[j] ^= bit
            fix_v4_checksum(t)
            variants.append(bytes(t))
            expect.append(x)
    out, drops = run(d, variants, "decrypt")
    for k, (x, got) in enumerate(zip(expect, drops)):
        if x == PASS:
            assert got == Drop.NONE, k
        elif x == DROPPED:
            assert got in (Drop.MALFORMED, Drop.AUTH_FAILED), k
        else:
            assert got == x, (k, x, got)
    assert Drop.AUTH_FAILED in drops


def test_mutable_fields_in_transit_transport_v4():
    """TTL, DSCP/ECN and DF change en route: still verifies, and the output keeps them."""
    cfg = ah_sa(mode=MODE_TRANSPORT)
    e, d = pair(cfg)
    pkts = packets(MODE_TRANSPORT, 4, 4)
    enc, _ = run(e, pkts, "encrypt")
    hops, expect = [], []
    for p, c in zip(pkts, enc):
        t = bytearray(c)
        t[8] = 3                                  # TTL after some hops
        t[1] = 0x2B                               # re-marked DSCP, CE
        t[6] |= 0x40                              # a router set DF
        fix_v4_checksum(t)
        hops.append(bytes(t))
        q = bytearray(p)
        q[8], q[1] = 3, 0x2B
        q[6] |= 0x40
        fix_v4_checksum(q)
        expect.append(bytes(q))
    out, drops = run(d, hops, "decrypt")
    assert drops == [Drop.NONE] * len(pkts) and out == expect


def test_mutable_fields_in_transit_transport_v6():
    cfg = ah_sa(mode=MODE_TRANSPORT, outer=6)
    e, d = pair(cfg)
    pkts = packets(MODE_TRANSPORT, 6, 6)
    enc, _ = run(e, pkts, "encrypt")
    hops, expect = [], []
    for p, c in zip(pkts, enc):
        t, q = bytearray(c), bytearray(p)
        for b in (t, q):
            b[0:4] = bytes([0x6F, 0xA5, 0x43, 0x21])  # traffic class + flow label
            b[7] = 1                                  # hop limit
        hops.append(bytes(t))
        expect.append(bytes(q))
    out, drops = run(d, hops, "decrypt")
    assert drops == [Drop.NONE] * len(pkts) and out == expect


def test_tunnel_ecn_decap_and_outer_ttl():
    """RFC 6040: CE set on the outer header in transit reaches an ECT inner packet."""
    cfg = ah_sa(mode=MODE_TUNNEL)
    e, d = pair(cfg)
    inner = [bytes(IP(src=INNER[4][0], dst=INNER[4][1], tos=0xB8 | ecn, ttl=9) / UDP())
             for ecn in (0, 1, 2, 3)]
    enc, _ = run(e, inner, "encrypt")
    for p, c in zip(inner, enc):
        assert c[8] == 64 and c[1] == p[1]        # outer TTL 64, DSCP+ECN copied
    hops = []
    for c in enc:
        t = bytearray(c)
        t[1] |= 3
        t[8] = 1
        fix_v4_checksum(t)
        hops.append(bytes(t))
    out, drops = run(d, hops, "decrypt")
    assert drops == [Drop.MALFORMED, Drop.NONE, Drop.NONE, Drop.NONE]   # CE on Not-ECT
    for p, o in zip(inner[1:], out[1:]):
        q = bytearray(p)
        q[1] |= 3
        fix_v4_checksum(q)
        assert o == bytes(q)


# ---------------------------------------------------------------------------------------
# IPv4 options and IPv6 extension headers (RFC 4302 3.3.3.1, Appendix A)
# ---------------------------------------------------------------------------------------
def test_ipv4_options_both_directions():
    cfg = ah_sa("hmac(sha1)", 96, MODE_TRANSPORT)
    e, d = pair(cfg, replay_window=0)
    src, dst = OUTER[4]
    p = bytes(IP(src=src, dst=dst, ttl=7, options=[IPOption_RR(routers=["198.51.100.1"]),
                                                   IPOption_Router_Alert()])
              / UDP(sport=5, dport=6) / Raw(b"options"))
    c = run(e, [p], "encrypt")[0][0]
    assert c == bytes(scapy_ah(cfg).encrypt(IP(p)))          # same ICV as scapy's
    assert bytes(scapy_ah(cfg).decrypt(IP(c))) == p
    w = bytes(scapy_ah(cfg, seq_num=9).encrypt(IP(p)))
    assert run(d, [w], "decrypt") == ([p], [Drop.NONE])
    # Record Route is mutable (zeroed as a whole): routers fill it in, ICV still good
    rr = 20
    assert c[rr:rr + 3] == bytes([7, 7, 4])                  # RR, length 7, pointer 4
    t = bytearray(c)
    t[rr + 2] += 4                                           # pointer
    t[rr + 3:rr + 7] = bytes([203, 0, 113, 9])               # recorded address
    fix_v4_checksum(t)
    out, drops = run(d, [bytes(t)], "decrypt")
    assert drops == [Drop.NONE] and out[0][20:32] == bytes(t[20:32])
    # Router Alert is immutable
    ra = c.index(bytes([148, 4]), 20)
    t = bytearray(c)
    t[ra + 3] ^= 1
    fix_v4_checksum(t)
    assert run(d, [bytes(t)], "decrypt")[1] == [Drop.AUTH_FAILED]
    # a malformed option list is refused both ways
    bad = bytearray(p)
    bad[20 + 1] = 1                                          # option length 1
    fix_v4_checksum(bad)
    assert run(e, [bytes(bad)], "encrypt")[1] == [Drop.MALFORMED]
    t = bytearray(c)
    t[rr + 1] = 40
    fix_v4_checksum(t)
    assert run(d, [bytes(t)], "decrypt")[1] == [Drop.MALFORMED]


def test_ipv4_loose_source_route_predicted_destination():
    """RFC 4302 3.3.3.1.1.1 / App. A1: with a source route the sender computes the ICV with
    the final destination in the destination field (as Linux does); scapy does not predict
    it, so this is an engine round trip along a simulated route."""
    src, hop, final = "192.0.2.1", "198.51.100.7", "192.0.2.2"
    cfg = ah_sa(mode=MODE_TRANSPORT)              # 192.0.2.1 -> 192.0.2.2
    e, d = pair(cfg)
    p = bytes(IP(src=src, dst=hop, options=[IPOption_LSRR(routers=[final])])
              / UDP(sport=1, dport=2) / Raw(b"lsrr"))
    b = PacketBatch.from_packets([p])
    b.sa[0] = 0                                   # the policy would match on the final dst
    e.encrypt(b)
    assert b.drop[0] == 0
    c = b.packet(0)
    assert c[16:20] == ipaddress.ip_address(hop).packed          # sent to the first hop
    # at the hop: destination <- next address, the option records the hop, pointer moves
    t = bytearray(c)
    t[16:20] = ipaddress.ip_address(final).packed
    t[23:27] = ipaddress.ip_address(hop).packed
    t[22] += 4
    t[8] -= 1
    fix_v4_checksum(t)
    out, drops = run(d, [bytes(t)], "decrypt")
    assert drops == [Drop.NONE]
    assert IP(out[0])[Raw].load == b"lsrr"


def _v6_ext_packet():
    src, dst = OUTER[6]
    return bytes(IPv6(src=src, dst=dst, hlim=5)
                 / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                 / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3E, optdata=b"abcd")])
                 / UDP(sport=3, dport=4) / Raw(b"ext headers"))


def test_ipv6_extension_headers_both_directions():
    cfg = ah_sa("hmac(sha256)", 128, MODE_TRANSPORT, outer=6)
    e, d = pair(cfg, replay_window=0)
    p = _v6_ext_packet()
    c = run(e, [p], "encrypt")[0][0]
    # AH after hop-by-hop and destination options (RFC 4302 3.1.1, as Linux and scapy do)
    assert ah_offset(c) == 40 + 8 + 8
    assert c == bytes(scapy_ah(cfg).encrypt(IPv6(p)))
    assert bytes(scapy_ah(cfg).decrypt(IPv6(c))) == p
    w = bytes(scapy_ah(cfg, seq_num=4).encrypt(IPv6(p)))
    assert run(d, [w], "decrypt") == ([p], [Drop.NONE])
    # option type 0x3E has the "may change en route" bit: its data is not covered
    opt = c.find(b"abcd")
    t = bytearray(c)
    t[opt:opt + 4] = b"wxyz"
    out, drops = run(d, [bytes(t)], "decrypt")
    assert drops == [Drop.NONE] and b"wxyz" in out[0]
    # Router Alert (0x05) does not: its value is covered
    t = bytearray(c)
    t[40 + 4] ^= 0x80
    assert run(d, [bytes(t)], "decrypt")[1] == [Drop.AUTH_FAILED]


def test_ipv6_routing_header():
    """Accepted only with segments left = 0 (then it is as the receiver sees it). scapy
    rotates the addresses when signing even then, so only its verifier is used here."""
    cfg = ah_sa("hmac(sha1)", 96, MODE_TRANSPORT, outer=6)
    e, d = pair(cfg, replay_window=0)
    src, dst = OUTER[6]
    done = bytes(IPv6(src=src, dst=dst) / IPv6ExtHdrRouting(addresses=["2001:db8::99"],
                                                            segleft=0)
                 / UDP(sport=1, dport=2) / Raw(b"rh"))
    c = run(e, [done], "encrypt")[0][0]
    assert bytes(scapy_ah(cfg).decrypt(IPv6(c))) == done
    assert run(d, [c], "decrypt") == ([done], [Drop.NONE])
    pending = bytearray(done)
    pending[40 + 3] = 1                                      # segments left
    assert run(e, [bytes(pending)], "encrypt")[1] == [Drop.MALFORMED]
    t = bytearray(c)
    t[40 + 3] = 1
    assert run(d, [bytes(t)], "decrypt")[1] == [Drop.MALFORMED]


# ---------------------------------------------------------------------------------------
# Decrypt edge cases
# ---------------------------------------------------------------------------------------
def test_tunnel_next_header_dummy_and_malformed():
    """A tunnel SA's AH must carry IPv4/IPv6 (or 59: a dummy, consumed silently). The wire
    packets are built by a transport-mode scapy SA between the tunnel endpoints."""
    cfg = ah_sa(mode=MODE_TUNNEL)
    _, d = pair(cfg)
    src, dst = OUTER[4]
    sa = scapy_ah(ah_sa(mode=MODE_TRANSPORT))
    dummy = bytes(sa.encrypt(IP(src=src, dst=dst, proto=59)))
    udp = bytes(sa.encrypt(IP(src=src, dst=dst) / UDP() / Raw(b"not a tunnel")))
    out, drops = run(d, [dummy, udp], "decrypt")
    assert drops == [Drop.DUMMY, Drop.MALFORMED]
    assert d.sa_stats(0)["replay_top"] == 2                  # both verified: window moved


def test_policy_mismatch_and_lookup():
    sel = Selector(net("10.1.0.0/16"), net("10.2.0.0/16"))
    cfg = ah_sa(mode=MODE_TUNNEL, sel=sel)
    _, d = pair(cfg)
    sa = scapy_ah(cfg)
    good = bytes(sa.encrypt(IP(src="10.1.0.5", dst="10.2.0.5") / UDP()))
    bad = bytes(sa.encrypt(IP(src="10.9.0.5", dst="10.2.0.5") / UDP()))
    other_spi = bytes(scapy_ah(ah_sa(spi=0x9999)).encrypt(IP(src="10.1.0.5",
                                                               dst="10.2.0.5") / UDP()))
    truncated = bytearray(good[:20 + 10])
    struct.pack_into("!H", truncated, 2, 30)
    fix_v4_checksum(truncated)
    _, drops = run(d, [good, bad, other_spi, bytes(truncated), bad], "decrypt")
    assert drops == [Drop.NONE, Drop.POLICY_MISMATCH, Drop.NO_SA, Drop.MALFORMED, Drop.REPLAY]
    st = d.stats()
    assert st["packets_in"] == 5 and st["packets_out"] == 1
    assert d.sa_stats(0)["dropped"]["policy_mismatch"] == 1


def test_ipv4_ah_aligned_to_8_bytes_accepted():
    """Linux pads IPv4 AH to 8 bytes unless `flag align4`; RFC 4302 only requires 4. The
    receiver accepts both (the ICV length is the SA's, never guessed). Padding content is
    the sender's choice and is covered by the ICV."""
    cfg = ah_sa("hmac(sha256)", 128, MODE_TRANSPORT)
    _, d = pair(cfg, replay_window=0)
    p = packets(MODE_TRANSPORT, 4, 4)[3]
    w8 = ah_oracle(cfg, p, 1, align=8, pad=b"\xaa\xbb\xcc\xdd")
    assert (w8[21] + 2) * 4 == 32
    w4 = ah_oracle(cfg, p, 2)
    assert (w4[21] + 2) * 4 == 28
    out, drops = run(d, [w8, w4], "decrypt")
    assert drops == [Drop.NONE, Drop.NONE] and out == [p, p]
    t = bytearray(w8)
    t[20 + 12 + 16] ^= 1                                     # padding is covered
    assert run(d, [bytes(t)], "decrypt")[1] == [Drop.AUTH_FAILED]
    # over IPv6 the header must be a multiple of 8: 28 bytes is malformed
    cfg6 = ah_sa("hmac(sha256)", 128, MODE_TRANSPORT, outer=6)
    _, d6 = pair(cfg6)
    p6 = packets(MODE_TRANSPORT, 6, 6)[3]
    assert run(d6, [ah_oracle(cfg6, p6, 1, align=4)], "decrypt")[1] == [Drop.MALFORMED]
    assert run(d6, [ah_oracle(cfg6, p6, 2, pad=b"\x01\x02\x03\x04")], "decrypt") == \
        ([p6], [Drop.NONE])


def test_dropped_packets_left_as_received():
    cfg = ah_sa(mode=MODE_TRANSPORT)
    e, d = pair(cfg)
    c = run(e, packets(MODE_TRANSPORT, 4, 4)[:1], "encrypt")[0][0]
    t = bytearray(c)
    t[-1] ^= 1
    b = PacketBatch.from_packets([bytes(t)])
    d.decrypt(b)
    assert b.drop[0] == Drop.AUTH_FAILED and b.packet(0) == bytes(t)


def test_install_refuses_ah_without_integrity():
    cfg = SAConfig(src=ip("192.0.2.1"), dst=ip("192.0.2.2"), proto=PROTO_AH, spi=1)
    with pytest.raises(ValueError):
        Engine().install(cfg, "out")


# ---------------------------------------------------------------------------------------
# ESP and AH in one batch
# ---------------------------------------------------------------------------------------
def test_mixed_esp_and_ah_batch():
    esp_cfg = SAConfig(src=ip(OUTER[4][0]), dst=ip(OUTER[4][1]), proto=PROTO_ESP, spi=0x1001,
                       enc="cbc(aes)", enc_key=key(16, 2), auth="hmac(sha1)",
                       auth_key=key(20, 3), icv_bits=96,
                       sel=Selector(net("10.1.0.0/16"), net("10.2.0.0/16")))
    ah4 = ah_sa("hmac(sha512)", 256, MODE_TUNNEL, 4, spi=0x2001,
                sel=Selector(net("10.3.0.0/16"), net("10.4.0.0/16")))
    ah6 = ah_sa("hmac(md5)", 96, MODE_TUNNEL, 6, spi=0x2002,
                sel=Selector(net("2001:db8:3::/48"), net("2001:db8:4::/48")))
    e, d = Engine(), Engine()
    for c in (esp_cfg, ah4, ah6):
        e.install(c, "out")
        d.install(c, "in")
    pkts, kinds = [], []
    for k in range(24):
        kind = k % 4
        if kind == 0:
            p = IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=k) / Raw(b"e" * k)
        elif kind == 1:
            p = IP(src="10.3.0.1", dst="10.4.0.1") / UDP(sport=k) / Raw(b"a" * k)
        elif kind == 2:
            p = IPv6(src="2001:db8:3::1", dst="2001:db8:4::1") / UDP(sport=k) / Raw(b"6" * k)
        else:
            p = IP(src="10.7.0.1", dst="10.8.0.1") / UDP(sport=k)    # no policy
        pkts.append(bytes(p))
        kinds.append(kind)
    enc, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NO_POLICY if k == 3 else Drop.NONE for k in kinds]
    esp_sa = SecurityAssociation(ESP, spi=0x1001, crypt_algo="AES-CBC", crypt_key=key(16, 2),
                                 auth_algo="HMAC-SHA1-96", auth_key=key(20, 3),
                                 tunnel_header=IP(src=OUTER[4][0], dst=OUTER[4][1]))
    for p, c, kind in zip(pkts, enc, kinds):
        if kind == 0:
            assert c[9] == 50 and bytes(esp_sa.decrypt(IP(c))) == p
        elif kind == 1:
            assert c[9] == 51 and bytes(scapy_ah(ah4).decrypt(IP(c))) == p
        elif kind == 2:
            assert c[6] == 51 and bytes(scapy_ah(ah6).decrypt(IPv6(c))) == p
    wire = [c for c, k in zip(enc, kinds) if k != 3]
    want = [p for p, k in zip(pkts, kinds) if k != 3]
    wire.insert(5, wire[4])                                  # an AH duplicate in the batch
    want.insert(5, None)
    out, drops = run(d, wire, "decrypt")
    assert drops == [Drop.REPLAY if w is None else Drop.NONE for w in want]
    assert [o for o, w in zip(out, want) if w is not None] == [w for w in want if w]
    assert [d.sa_stats(h)["packets"] for h in d.handles()] == [6, 6, 6]
    assert [e.sa_stats(h)["packets"] for h in e.handles()] == [6, 6, 6]
    assert d.stats()["dropped"]["replay"] == 1 and e.stats()["dropped"]["no_policy"] == 6
    # the ESP rows and the AH rows do not disturb each other's buffers across batches
    out2, drops2 = run(d, wire, "decrypt")
    assert set(drops2) == {Drop.REPLAY}
