"""ESP cross-checks of the engine against independent implementations.

Oracles:
- scapy's IPsec layer (scapy.layers.ipsec.SecurityAssociation, ESP) for every ESP transform
  of engine/algorithms.py, in both directions: engine encrypt -> scapy decrypt, and scapy
  encrypt -> engine decrypt, compared byte for byte with the original packet; tunnel and
  transport mode, IPv4/IPv6 outer and inner (all four tunnel combinations), RFC 3948 UDP
  encapsulation (scapy's nat_t_header), inner TCP/UDP/ICMP of sizes around block boundaries.
  scapy is an independent code base (its own framing, padding and ICV handling on top of
  the `cryptography` package), which is why it is the primary oracle. Two gaps are filled in
  tests/oracle.py without touching scapy's logic: HMAC-SHA-256 truncated to 96 bits (Linux's
  `auth` default; scapy ships only RFC 4868's 128) is a scapy AuthAlgo with icv_size=12, and
  GCM with 8/12-byte ICVs goes through scapy's generic Cipher/GCM path, because its 'AES-GCM'
  entry uses cryptography's AESGCM, which always emits a 16-byte tag. scapy 2.8 does have
  CHACHA20-POLY1305 (RFC 7634), so no separate ChaCha oracle is needed for the round trips.
- tests/oracle.py's own ESP (cryptography + hmac, written from the RFCs) wherever scapy
  cannot produce the packet: wrong padding bytes, TFC padding, next header 59, tampering at
  chosen offsets, and extended sequence numbers across the 2^32 boundary. scapy's ESN
  support takes the high 32 bits as a fixed per-SA (or per-call) argument and never infers
  them, and for the non-AEAD transforms the ESN high bits are an implicit trailer of the
  ICV input (RFC 4303 2.2.1) that an implementation can silently get wrong in a way a round
  trip between two copies of the same mistake would not reveal. So the ESN tests check the
  engine's output against the oracle with the true 64-bit sequence number, show that the
  ICV fails with the wrong high bits, and then cross-check with scapy given the high bits.

Header-level details (outer TTL/DSCP/ECN/DF/flow label, UDP checksums, sequence numbers,
padding) are checked against CONTRACT-SPU.md "encrypt" and "decrypt" and RFC 6040.
"""
from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, in6_chksum
from scapy.packet import Raw

from engine.drops import Drop
from engine.sa import MODE_TRANSPORT, MODE_TUNNEL, SAConfig, Selector

from oracle import (INNER, OracleAuthError, alg_aead, alg_enc, alg_id, engine_for,
                    esp_offset, esp_open, esp_seal, icv_len, ipv4_checksum, iv_len,
                    make_sa, oracle_encrypt, run, scapy_open, scapy_sa, tunnel_packet)

net = ipaddress.ip_network

# ---------------------------------------------------------------------------------------
# The transform matrix
# ---------------------------------------------------------------------------------------
ENCS = [("cbc(aes)", 16), ("cbc(aes)", 24), ("cbc(aes)", 32), ("cbc(des3_ede)", 24),
        ("cbc(des)", 8), ("rfc3686(ctr(aes))", 20), ("rfc3686(ctr(aes))", 28),
        ("rfc3686(ctr(aes))", 36), ("ecb(cipher_null)", 0)]
AUTHS_ = [("hmac(md5)", 96), ("hmac(sha1)", 96), ("hmac(sha256)", 128), ("hmac(sha256)", 96),
          ("hmac(sha384)", 192), ("hmac(sha512)", 256), ("digest_null", 0)]
AEADS = ([alg_aead("rfc4106(gcm(aes))", k, icv) for k in (20, 28, 36) for icv in (64, 96, 128)]
         + [alg_aead("rfc4543(gcm(aes))", k, 128) for k in (20, 28, 36)]
         + [alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)])
ALL_ALGS = [alg_enc(e, k, a, b) for e, k in ENCS for a, b in AUTHS_] + AEADS

# A representative subset for the mode/family/encapsulation matrix.
TOPO_ALGS = [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
             alg_enc("cbc(des3_ede)", 24, "hmac(sha256)", 128),
             alg_enc("rfc3686(ctr(aes))", 20, "hmac(sha512)", 256),
             alg_enc("ecb(cipher_null)", 0, "hmac(md5)", 96),
             alg_aead("rfc4106(gcm(aes))", 20, 128),
             alg_aead("rfc4543(gcm(aes))", 36, 128),
             alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)]

# (mode, outer family, inner family, UDP encapsulation)
TOPOLOGIES = ([(MODE_TUNNEL, o, i, u) for o in (4, 6) for i in (4, 6) for u in (False, True)]
              + [(MODE_TRANSPORT, f, f, u) for f in (4, 6) for u in (False, True)])


def topo_id(t) -> str:
    mode, o, i, u = t
    return (f"tunnel-{i}in{o}" if mode == MODE_TUNNEL else f"transport-v{o}") + \
        ("-udp" if u else "")


# Payload sizes: every residue mod 16 of the ESP payload (so every pad length for 16-, 8-
# and 4-byte alignment), 0, and a large packet.
SIZES = list(range(17)) + [100, 1400]
TOPO_SIZES = [0, 1, 14, 15, 16, 17, 255, 1000]


def inner_addrs(cfg: SAConfig, fam: int) -> tuple[str, str]:
    """Transport mode protects the SA endpoints' own packets; tunnels carry INNER hosts."""
    return (str(cfg.src), str(cfg.dst)) if cfg.mode == MODE_TRANSPORT else INNER[fam]


def mk(fam: int, src: str, dst: str, l4: str, n: int, **ipkw) -> bytes:
    """One inner packet: IPv4/IPv6 with TCP, UDP or ICMP(v6) echo and n payload bytes."""
    data = bytes((7 * i + n) & 0xFF for i in range(n))
    hdr = IP(src=src, dst=dst, **ipkw) if fam == 4 else IPv6(src=src, dst=dst, **ipkw)
    if l4 == "tcp":
        up = TCP(sport=40000 + n, dport=443, flags="PA", seq=n) / Raw(data)
    elif l4 == "udp":
        up = UDP(sport=50000 + n, dport=53) / Raw(data)
    else:
        up = (ICMP(id=7, seq=n) if fam == 4 else ICMPv6EchoRequest(id=7, seq=n, data=data))
        if fam == 4:
            up = up / Raw(data)
    return bytes(hdr / up)


def packets_for(cfg: SAConfig, fam: int, sizes, protos=("udp",)) -> list[bytes]:
    src, dst = inner_addrs(cfg, fam)
    return [mk(fam, src, dst, p, n) for p in protos for n in sizes]


def udp6_checksum_ok(pkt: bytes) -> bool:
    """The UDP checksum of an IPv6 packet, recomputed by scapy (RFC 8200 8.1 pseudo-header)."""
    o = IPv6(pkt)
    got = o[UDP].chksum
    seg = bytearray(bytes(o[UDP]))
    seg[6:8] = b"\0\0"
    want = in6_chksum(17, o[UDP], bytes(seg))
    return got != 0 and got == (want or 0xFFFF)


def wire_seq(pkt: bytes) -> int:
    return struct.unpack("!I", pkt[esp_offset(pkt) + 4:esp_offset(pkt) + 8])[0]


def check_engine_to_scapy(cfg: SAConfig, pkts: list[bytes], oseq: int = 0) -> list[bytes]:
    """Engine encrypts; scapy (and the oracle) must recover every packet exactly."""
    outs, drops = run(engine_for(cfg, "out"), pkts, "encrypt")
    assert drops == [Drop.NONE] * len(pkts)
    sa = scapy_sa(cfg)
    for k, (p, c) in enumerate(zip(pkts, outs)):
        assert wire_seq(c) == oseq + 1 + k
        dec, plain = scapy_open(sa, c)
        assert dec == p, f"packet {k}: scapy recovered a different packet"
        # RFC 4303 2.4 default padding 1, 2, 3, ...; the pad length matches.
        assert plain.padding == bytes(range(1, plain.padlen + 1))
        body, pad, nh = esp_open(cfg, c[esp_offset(c):], oseq + 1 + k)
        assert pad == plain.padding and nh == plain.nh
    return outs


def check_scapy_to_engine(cfg: SAConfig, pkts: list[bytes]) -> None:
    """scapy encrypts (sequence numbers 1..n); the engine must recover every packet."""
    sa = scapy_sa(cfg)
    cls = {4: IP, 6: IPv6}
    enc = [bytes(sa.encrypt(cls[p[0] >> 4](p))) for p in pkts]
    outs, drops = run(engine_for(cfg, "in"), enc, "decrypt")
    assert drops == [Drop.NONE] * len(pkts)
    assert outs == pkts


# ---------------------------------------------------------------------------------------
# 1. Every transform, both directions (tunnel IPv4 in IPv4, UDP of every alignment)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ALL_ALGS, ids=alg_id)
def test_algorithm_engine_to_scapy(alg):
    cfg = make_sa(alg)
    check_engine_to_scapy(cfg, packets_for(cfg, 4, SIZES))


@pytest.mark.parametrize("alg", ALL_ALGS, ids=alg_id)
def test_algorithm_scapy_to_engine(alg):
    cfg = make_sa(alg)
    check_scapy_to_engine(cfg, packets_for(cfg, 4, SIZES))


@pytest.mark.parametrize("alg", ALL_ALGS, ids=alg_id)
def test_algorithm_oracle_to_engine(alg):
    """The oracle's packets too (fixed IVs, so a second independent encoding)."""
    cfg = make_sa(alg)
    pkts = packets_for(cfg, 4, [0, 5, 16, 1400])
    enc = [oracle_encrypt(cfg, p, k + 1, iv=bytes([k]) * iv_len(cfg))
           for k, p in enumerate(pkts)]
    outs, drops = run(engine_for(cfg, "in"), enc, "decrypt")
    assert drops == [Drop.NONE] * len(pkts) and outs == pkts


# ---------------------------------------------------------------------------------------
# 2. Modes, address families, UDP encapsulation, inner protocols
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("topo", TOPOLOGIES, ids=topo_id)
@pytest.mark.parametrize("alg", TOPO_ALGS, ids=alg_id)
def test_topology_both_directions(alg, topo):
    mode, outer, inner, udp = topo
    cfg = make_sa(alg, mode=mode, outer=outer, encap=udp)
    pkts = packets_for(cfg, inner, TOPO_SIZES, ("tcp", "udp", "icmp"))
    outs = check_engine_to_scapy(cfg, pkts)
    for p, c in zip(pkts, outs):
        o = IP(c) if outer == 4 else IPv6(c)
        assert (o.src, o.dst) == (str(cfg.src), str(cfg.dst))
        if udp:
            assert (o[UDP].sport, o[UDP].dport) == (4500, 4500)
            assert o[UDP].len == len(c) - (20 if outer == 4 else 40)
        if mode == MODE_TRANSPORT:     # the packet's own header, TTL/hop limit untouched
            assert c[8 if outer == 4 else 7] == p[8 if outer == 4 else 7]
    check_scapy_to_engine(cfg, pkts)


# ---------------------------------------------------------------------------------------
# 3. Outer header details (CONTRACT-SPU.md "encrypt")
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("inner", [4, 6])
@pytest.mark.parametrize("outer", [4, 6])
def test_outer_header_fields(outer, inner, udp):
    cfg = make_sa(alg_enc("cbc(aes)", 16, "hmac(sha1)", 96), outer=outer, encap=udp, oseq=1000)
    s, d = INNER[inner]
    pkts = []
    for ecn in range(4):
        for dscp, df in ((0, False), (46, True), (10, False), (63, True)):
            tos = dscp << 2 | ecn
            if inner == 4:
                pkts.append(bytes(IP(src=s, dst=d, tos=tos, ttl=17, flags="DF" if df else 0)
                                  / UDP(sport=1, dport=2) / Raw(b"x" * (dscp % 20))))
            else:
                pkts.append(bytes(IPv6(src=s, dst=d, tc=tos, fl=0xABCDE, hlim=17)
                                  / UDP(sport=1, dport=2) / Raw(b"x" * (dscp % 20))))
    outs = check_engine_to_scapy(cfg, pkts, oseq=1000)
    for p, c in zip(pkts, outs):
        inner_tos = p[1] if inner == 4 else IPv6(p).tc
        inner_df = bool(IP(p).flags.DF) if inner == 4 else True
        if outer == 4:
            o = IP(c)
            assert o.ttl == 64
            assert o.tos == inner_tos                  # DSCP copied, ECN copied (RFC 6040)
            assert bool(o.flags.DF) == inner_df        # inner IPv6: always DF
            assert not o.flags.MF and o.frag == 0
            assert o.len == len(c) and o.ihl == 5
            assert ipv4_checksum(c[:20]) == 0
            assert o.proto == (17 if udp else 50)
            if udp:
                assert o[UDP].chksum == 0              # RFC 3948 2.1 on IPv4
        else:
            o = IPv6(c)
            assert o.hlim == 64
            assert o.tc == inner_tos
            assert o.fl == 0
            assert o.plen == len(c) - 40
            assert o.nh == (17 if udp else 50)
            if udp:
                assert udp6_checksum_ok(c)           # mandatory and correct on IPv6


@pytest.mark.parametrize("fam", [4, 6])
def test_transport_udp_checksums(fam):
    cfg = make_sa(alg_aead("rfc4106(gcm(aes))", 20, 128), mode=MODE_TRANSPORT, outer=fam,
                  encap=True)
    pkts = packets_for(cfg, fam, [0, 3, 77])
    outs = check_engine_to_scapy(cfg, pkts)
    for c in outs:
        if fam == 4:
            assert IP(c)[UDP].chksum == 0 and ipv4_checksum(c[:20]) == 0
        else:
            assert udp6_checksum_ok(c)


def test_sequence_numbers_start_at_oseq_plus_one():
    alg = alg_aead("rfc4106(gcm(aes))", 20, 128)
    for oseq in (0, 1, 41, 0xFFFF0000):
        cfg = make_sa(alg, oseq=oseq)
        e = engine_for(cfg, "out")
        pkts = packets_for(cfg, 4, [1, 2, 3])
        outs, _ = run(e, pkts, "encrypt")
        outs2, _ = run(e, pkts, "encrypt")        # continues in the next batch
        assert [wire_seq(c) for c in outs + outs2] == [oseq + k for k in range(1, 7)]


@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_enc("cbc(des)", 8, "hmac(md5)", 96),
                                 alg_enc("rfc3686(ctr(aes))", 20, "hmac(sha256)", 128),
                                 alg_aead("rfc4106(gcm(aes))", 20, 128),
                                 alg_aead("rfc4543(gcm(aes))", 20, 128),
                                 alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)],
                         ids=alg_id)
def test_iv_uniqueness(alg):
    cfg = make_sa(alg)
    e = engine_for(cfg, "out")
    pkts = packets_for(cfg, 4, [10] * 150)
    outs = run(e, pkts, "encrypt")[0] + run(e, pkts, "encrypt")[0]
    n = iv_len(cfg)
    ivs = [c[esp_offset(c) + 8:esp_offset(c) + 8 + n] for c in outs]
    assert len(set(ivs)) == len(ivs) == 300
    if cfg.aead == "rfc4106(gcm(aes))":
        # RFC 4106 3.1 / 8.1: a counter is the recommended IV; the engine uses the (64-bit)
        # sequence number.
        assert ivs == [struct.pack("!Q", k) for k in range(1, 301)]


def test_keys_not_in_repr():
    cfg = SAConfig(src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
                   proto=50, spi=1, enc="cbc(aes)", enc_key=bytes(range(0xA0, 0xB0)),
                   auth="hmac(sha1)", auth_key=bytes(range(0xC0, 0xD4)), icv_bits=96)
    aead = make_sa(alg_aead("rfc4106(gcm(aes))", 20, 128))
    for c, keys in ((cfg, (cfg.enc_key, cfg.auth_key)), (aead, (aead.aead_key,))):
        r = repr(c) + str(c)
        for k in keys:
            assert k.hex() not in r and k.hex().upper() not in r
            assert repr(k) not in r and repr(k[:8])[2:-1] not in r


# ---------------------------------------------------------------------------------------
# 4. Decrypt-side details (built with the oracle)
# ---------------------------------------------------------------------------------------
# RFC 6040 section 4.2, Figure 4: (inner ECN, outer ECN) -> inner ECN after decapsulation,
# None = drop. Codepoints: 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
RFC6040 = {
    (0, 0): 0, (0, 2): 0, (0, 1): 0, (0, 3): None,
    (2, 0): 2, (2, 2): 2, (2, 1): 1, (2, 3): 3,
    (1, 0): 1, (1, 2): 1, (1, 1): 1, (1, 3): 3,
    (3, 0): 3, (3, 2): 3, (3, 1): 3, (3, 3): 3,
}


@pytest.mark.parametrize("outer", [4, 6])
@pytest.mark.parametrize("inner", [4, 6])
def test_ecn_decapsulation_rfc6040(inner, outer):
    cfg = make_sa(alg_aead("rfc4106(gcm(aes))", 20, 128), outer=outer)
    s, d = INNER[inner]
    pkts, want = [], []
    for (iecn, oecn), res in RFC6040.items():
        tos = 0xB8 | iecn      # DSCP EF
        p = (bytes(IP(src=s, dst=d, tos=tos, ttl=9) / UDP(sport=1, dport=2) / Raw(b"ecn"))
             if inner == 4 else
             bytes(IPv6(src=s, dst=d, tc=tos, hlim=9) / UDP(sport=1, dport=2) / Raw(b"ecn")))
        pkts.append(oracle_encrypt(cfg, p, len(pkts) + 1, tos=0x28 | oecn))
        want.append((p, res))
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    for (p, res), out, drop, key_ in zip(want, outs, drops, RFC6040):
        if res is None:
            assert drop != Drop.NONE, f"{key_}: outer CE on a Not-ECT inner must be dropped"
            continue
        assert drop == Drop.NONE, key_
        if inner == 4:
            q = IP(out)
            assert q.tos == 0xB8 | res and q.ttl == 9, key_   # DSCP and TTL unchanged
            assert ipv4_checksum(out[:20]) == 0, f"{key_}: bad inner IPv4 checksum"
            assert out[:1] + out[2:10] + out[12:] == p[:1] + p[2:10] + p[12:]
        else:
            q = IPv6(out)
            assert q.tc == 0xB8 | res and q.hlim == 9, key_
            assert out[2:] == p[2:] and out[0] == p[0]


@pytest.mark.parametrize("inner", [4, 6])
@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 32, "hmac(sha256)", 96),
                                 alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)],
                         ids=alg_id)
def test_tfc_padding_stripped(alg, inner):
    cfg = make_sa(alg, outer=6)
    pkts = packets_for(cfg, inner, [0, 9, 100], ("udp", "tcp"))
    enc = [oracle_encrypt(cfg, p, k + 1, tfc=bytes(range(k * 13 % 50)))
           for k, p in enumerate(pkts)]
    outs, drops = run(engine_for(cfg, "in"), enc, "decrypt")
    assert drops == [Drop.NONE] * len(pkts) and outs == pkts


@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_aead("rfc4106(gcm(aes))", 20, 96)], ids=alg_id)
def test_dummy_packet(alg):
    """Next header 59 (RFC 4303 2.6): consumed as DUMMY, and it advances the window."""
    cfg = make_sa(alg)
    p = packets_for(cfg, 4, [5])[0]
    pkts = [tunnel_packet(cfg, esp_seal(cfg, b"", 59, 1)),
            tunnel_packet(cfg, esp_seal(cfg, bytes(40), 59, 2)),
            oracle_encrypt(cfg, p, 3),
            tunnel_packet(cfg, esp_seal(cfg, b"", 59, 1))]
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    assert drops == [Drop.DUMMY, Drop.DUMMY, Drop.NONE, Drop.REPLAY]
    assert outs[2] == p


@pytest.mark.parametrize("mode", [MODE_TUNNEL, MODE_TRANSPORT], ids=["tunnel", "transport"])
@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_enc("cbc(des3_ede)", 24, "hmac(md5)", 96),
                                 alg_aead("rfc4106(gcm(aes))", 20, 128)], ids=alg_id)
def test_padding_checked(alg, mode):
    """Pad bytes must be 1, 2, 3, ... (RFC 4303 2.4): otherwise MALFORMED after a good ICV,
    and the window still advances. Longer-than-needed correct padding is fine."""
    cfg = make_sa(alg, mode=mode)
    p = packets_for(cfg, 4, [3])[0]
    payload = p if mode == MODE_TUNNEL else p[20:]
    from engine.algorithms import CIPHERS
    block = CIPHERS[cfg.aead or cfg.enc].block
    need = (-(len(payload) + 2)) % block
    good_long = bytes(range(1, need + 2 * block + 1))        # extra blocks of padding
    bad = bytearray(range(1, need + block + 1))
    bad[len(bad) // 2] ^= 0x40
    pkts = [oracle_encrypt(cfg, p, 1, pad=good_long),
            oracle_encrypt(cfg, p, 2, pad=bytes(bad)),
            oracle_encrypt(cfg, p, 3, pad=bytes(need + block)),          # all zeros
            oracle_encrypt(cfg, p, 2, pad=bytes(range(1, need + 1))),     # good, but seq 2 seen
            oracle_encrypt(cfg, p, 4)]
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    assert drops == [Drop.NONE, Drop.MALFORMED, Drop.MALFORMED, Drop.REPLAY, Drop.NONE]
    assert outs[0] == p and outs[4] == p


def test_tunnel_next_header_must_be_ip():
    cfg = make_sa(alg_enc("cbc(aes)", 16, "hmac(sha1)", 96))
    p = packets_for(cfg, 4, [3])[0]
    pkts = [tunnel_packet(cfg, esp_seal(cfg, p, 17, 1)),     # UDP in a tunnel: impossible
            tunnel_packet(cfg, esp_seal(cfg, p, 41, 2)),     # claims IPv6, carries IPv4
            tunnel_packet(cfg, esp_seal(cfg, p, 4, 3))]
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    assert drops == [Drop.MALFORMED, Drop.MALFORMED, Drop.NONE]


@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_aead("rfc4106(gcm(aes))", 20, 128)], ids=alg_id)
def test_replay(alg):
    cfg = make_sa(alg)
    pkts = packets_for(cfg, 4, [1, 2, 3, 4])
    enc, _ = run(engine_for(cfg, "out"), pkts, "encrypt")
    d = engine_for(cfg, "in")
    outs, drops = run(d, [enc[0], enc[0], enc[2], enc[1], enc[2]], "decrypt")
    assert drops == [Drop.NONE, Drop.REPLAY, Drop.NONE, Drop.NONE, Drop.REPLAY]
    assert outs[0] == pkts[0] and outs[2] == pkts[2] and outs[3] == pkts[1]
    outs, drops = run(d, [enc[1], enc[3], enc[0], enc[3]], "decrypt")     # across batches
    assert drops == [Drop.REPLAY, Drop.NONE, Drop.REPLAY, Drop.REPLAY]
    assert d.stats()["dropped"]["replay"] == 5


def test_replay_window_edge_and_seq_zero():
    cfg = make_sa(alg_aead("rfc4106(gcm(aes))", 20, 128))    # replay-window 64 (default)
    p = packets_for(cfg, 4, [1])[0]
    d = engine_for(cfg, "in")
    seqs = [100, 36, 37, 0, 101, 37]
    _, drops = run(d, [oracle_encrypt(cfg, p, s) for s in seqs], "decrypt")
    assert drops == [Drop.NONE, Drop.REPLAY, Drop.NONE, Drop.REPLAY, Drop.NONE, Drop.REPLAY]


def test_no_replay_check_without_integrity():
    """RFC 4303 3.4.3: anti-replay needs integrity; enc without auth does none."""
    cfg = make_sa(alg_enc("cbc(aes)", 16, "digest_null", 0))
    p = packets_for(cfg, 4, [1])[0]
    _, drops = run(engine_for(cfg, "in"), [oracle_encrypt(cfg, p, 5)] * 3, "decrypt")
    assert drops == [Drop.NONE] * 3


def test_policy_mismatch():
    sel = Selector(net("10.1.0.0/16"), net("10.2.0.0/16"), proto=17)
    cfg = make_sa(alg_enc("cbc(aes)", 16, "hmac(sha1)", 96), sel=sel)
    good = mk(4, "10.1.2.3", "10.2.3.4", "udp", 5)
    pkts = [good,
            mk(4, "10.9.0.1", "10.2.0.1", "udp", 5),    # source outside
            mk(4, "10.1.0.1", "10.3.0.1", "udp", 5),    # destination outside
            mk(4, "10.1.0.1", "10.2.0.1", "tcp", 5),    # protocol outside
            mk(6, INNER[6][0], INNER[6][1], "udp", 5)]  # family outside
    enc = [oracle_encrypt(cfg, p, k + 1) for k, p in enumerate(pkts)]
    enc.append(oracle_encrypt(cfg, good, 2))            # the mismatch still advanced the window
    outs, drops = run(engine_for(cfg, "in"), enc, "decrypt")
    assert drops == [Drop.NONE] + [Drop.POLICY_MISMATCH] * 4 + [Drop.REPLAY]
    assert outs[0] == good
    # and scapy's encryption of a selector-conforming packet passes
    check_scapy_to_engine(cfg, [good])


@pytest.mark.parametrize("alg", [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
                                 alg_enc("cbc(aes)", 32, "hmac(sha512)", 256),
                                 alg_enc("rfc3686(ctr(aes))", 28, "hmac(md5)", 96),
                                 alg_enc("ecb(cipher_null)", 0, "hmac(sha256)", 96),
                                 alg_aead("rfc4106(gcm(aes))", 28, 64),
                                 alg_aead("rfc4543(gcm(aes))", 20, 128),
                                 alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)],
                         ids=alg_id)
@pytest.mark.parametrize("encap", [False, True], ids=["esp", "udp"])
def test_tampering(alg, encap):
    cfg = make_sa(alg, encap=encap)
    p = packets_for(cfg, 4, [40])[0]
    good = oracle_encrypt(cfg, p, 5)
    e0 = esp_offset(good)
    ivn, icvn = iv_len(cfg), icv_len(cfg)
    spots = {"seq": e0 + 7, "first-data": e0 + 8 + ivn, "last-data": len(good) - icvn - 1,
             "icv-first": len(good) - icvn, "icv-last": len(good) - 1}
    if ivn:
        spots["iv"] = e0 + 8
    tampered = []
    for name, at in spots.items():
        b = bytearray(good)
        b[at] ^= 0x01
        tampered.append(bytes(b))
    truncated_icv = good[:-4]
    if encap:
        truncated_icv = truncated_icv[:e0 - 8] + struct.pack(
            "!HHHH", 4500, 4500, len(truncated_icv) - e0 + 8, 0) + truncated_icv[e0:]
    fixed = bytearray(truncated_icv)
    if fixed[0] >> 4 == 4:
        struct.pack_into("!H", fixed, 2, len(fixed))
        struct.pack_into("!H", fixed, 10, 0)
        struct.pack_into("!H", fixed, 10, ipv4_checksum(bytes(fixed[:20])))
    spi_flip = bytearray(good)
    spi_flip[e0 + 3] ^= 0x01
    pkts = tampered + [bytes(fixed), bytes(spi_flip), good]
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    n = len(tampered)
    assert drops[:n] == [Drop.AUTH_FAILED] * n, dict(zip(spots, drops))
    # 4 bytes short: either the ICV fails or (block cipher misalignment) MALFORMED
    assert drops[n] in (Drop.AUTH_FAILED, Drop.MALFORMED)
    assert drops[n + 1] == Drop.NO_SA
    assert drops[n + 2] == Drop.NONE and outs[n + 2] == p


@pytest.mark.parametrize("fam", [4, 6])
def test_keepalive_and_non_esp_marker(fam):
    cfg = make_sa(alg_aead("rfc4106(gcm(aes))", 20, 128), outer=fam, encap=True)
    s, d = str(cfg.src), str(cfg.dst)
    hdr = IP(src=s, dst=d) if fam == 4 else IPv6(src=s, dst=d)
    ike = b"\0\0\0\0" + bytes(range(28))       # RFC 3948 2.2 non-ESP marker + IKE header
    pkts = [bytes(hdr / UDP(sport=4500, dport=4500) / Raw(b"\xff")),
            bytes(hdr / UDP(sport=4500, dport=4500) / Raw(ike)),
            bytes(hdr / UDP(sport=4500, dport=4501) / Raw(b"\xff")),    # not our port
            oracle_encrypt(cfg, packets_for(cfg, 4, [1])[0], 1)]
    outs, drops = run(engine_for(cfg, "in"), pkts, "decrypt")
    assert drops == [Drop.KEEPALIVE, Drop.NO_SA, Drop.NO_SA, Drop.NONE]
    st = engine_for(cfg, "in")
    run(st, pkts[:1], "decrypt")
    assert st.stats()["dropped"]["keepalive"] == 1


def test_sequence_exhaustion():
    alg = alg_enc("cbc(aes)", 16, "hmac(sha1)", 96)
    cfg = make_sa(alg, oseq=0xFFFFFFFE)
    e = engine_for(cfg, "out")
    pkts = packets_for(cfg, 4, [1, 2, 3])
    outs, drops = run(e, pkts, "encrypt")
    assert drops == [Drop.NONE, Drop.SEQ_EXHAUSTED, Drop.SEQ_EXHAUSTED]
    assert wire_seq(outs[0]) == 0xFFFFFFFF
    assert scapy_open(scapy_sa(cfg), outs[0])[0] == pkts[0]
    _, drops = run(e, pkts[:1], "encrypt")
    assert drops == [Drop.SEQ_EXHAUSTED]
    assert e.stats()["dropped"]["seq_exhausted"] == 3
    # with ESN the same SA just carries on past 2^32
    cfg = make_sa(alg, oseq=0xFFFFFFFE, esn=True)
    outs, drops = run(engine_for(cfg, "out"), pkts, "encrypt")
    assert drops == [Drop.NONE] * 3
    assert [wire_seq(c) for c in outs] == [0xFFFFFFFF, 0, 1]


# ---------------------------------------------------------------------------------------
# 5. Extended sequence numbers across 2^32 (oracle, then scapy told the high bits)
# ---------------------------------------------------------------------------------------
ESN_ALGS = [alg_enc("cbc(aes)", 16, "hmac(sha1)", 96),
            alg_enc("cbc(aes)", 24, "hmac(sha256)", 128),
            alg_enc("cbc(des3_ede)", 24, "hmac(sha384)", 192),
            alg_enc("ecb(cipher_null)", 0, "hmac(md5)", 96),
            alg_enc("rfc3686(ctr(aes))", 36, "hmac(sha512)", 256),
            alg_aead("rfc4106(gcm(aes))", 20, 128),
            alg_aead("rfc4106(gcm(aes))", 36, 64),
            alg_aead("rfc4543(gcm(aes))", 28, 128),
            alg_aead("rfc7539esp(chacha20,poly1305)", 36, 128)]
ESN_BASE = 0xFFFFFFF0


@pytest.mark.parametrize("mode", [MODE_TUNNEL, MODE_TRANSPORT], ids=["tunnel", "transport"])
@pytest.mark.parametrize("alg", ESN_ALGS, ids=alg_id)
def test_esn_encrypt_across_2_32(alg, mode):
    cfg = make_sa(alg, mode=mode, esn=True, oseq=ESN_BASE)
    e = engine_for(cfg, "out")
    pkts = packets_for(cfg, 4, range(24))
    outs = run(e, pkts[:12], "encrypt")[0] + run(e, pkts[12:], "encrypt")[0]
    for k, (p, c) in enumerate(zip(pkts, outs)):
        seq = ESN_BASE + 1 + k                        # 0xfffffff1 .. 0x1_00000008
        assert wire_seq(c) == seq & 0xFFFFFFFF
        body, pad, nh = esp_open(cfg, c[esp_offset(c):], seq)
        assert nh == (4 if mode == MODE_TUNNEL else 17)
        assert body == (p if mode == MODE_TUNNEL else p[20:])
        assert pad == bytes(range(1, len(pad) + 1))
        with pytest.raises(OracleAuthError):          # the high bits are really covered
            esp_open(cfg, c[esp_offset(c):], seq ^ (1 << 32))
        sa = scapy_sa(cfg, esn_hi=seq >> 32)
        assert scapy_open(sa, c)[0] == p


@pytest.mark.parametrize("alg", ESN_ALGS, ids=alg_id)
def test_esn_decrypt_across_2_32(alg):
    cfg = make_sa(alg, esn=True, seq=ESN_BASE)
    d = engine_for(cfg, "in")
    pkts = packets_for(cfg, 4, range(30))
    seqs = [ESN_BASE + k for k in range(1, 31)]           # 0xfffffff1 .. 0x1_0000000e
    late = seqs[5]                                          # held back, sent after the wrap
    first = [(s, p) for s, p in zip(seqs, pkts) if s != late]
    enc = [oracle_encrypt(cfg, p, s) for s, p in first[:10]]
    outs, drops = run(d, enc, "decrypt")
    assert drops == [Drop.NONE] * 10 and outs == [p for _, p in first[:10]]
    # the rest, half from scapy (told the high bits), half from the oracle
    enc = []
    for k, (s, p) in enumerate(first[10:]):
        if k % 2 and s & 0xFFFFFFFF:   # scapy treats seq_num=0 as 'not given'
            sa = scapy_sa(cfg, esn_hi=s >> 32)
            enc.append(bytes(sa.encrypt(IP(p), seq_num=s & 0xFFFFFFFF, esn=s >> 32)))
        else:
            enc.append(oracle_encrypt(cfg, p, s))
    outs, drops = run(d, enc, "decrypt")
    assert drops == [Drop.NONE] * len(enc) and outs == [p for _, p in first[10:]]
    top = seqs[-1]
    assert d.sa_stats(d.handles()[0])["replay_top"] == top
    late_pkt = pkts[seqs.index(late)]
    cases = [
        (oracle_encrypt(cfg, late_pkt, late), Drop.NONE),     # inferred high bits 0
        (oracle_encrypt(cfg, late_pkt, late), Drop.REPLAY),
        (oracle_encrypt(cfg, pkts[0], seqs[-3]), Drop.REPLAY),
        # ICV over low bits only / wrong high bits: engine infers hi=1 -> ICV fails
        (oracle_encrypt(cfg, pkts[0], top + 1 - (1 << 32)), Drop.AUTH_FAILED),
        (oracle_encrypt(cfg, pkts[0], top + 1), Drop.NONE),
    ]
    outs, drops = run(d, [c for c, _ in cases], "decrypt")
    assert drops == [w for _, w in cases]
    assert outs[0] == late_pkt


def test_esn_icv_differs_from_non_esn():
    """Sanity of the oracle itself: for HMAC transforms the ESN ICV input has the 4 extra
    bytes even when the high bits are 0, so an ESN SA must reject a non-ESN ICV."""
    alg = alg_enc("cbc(aes)", 16, "hmac(sha1)", 96)
    esn, plain = make_sa(alg, esn=True), make_sa(alg)
    p = packets_for(plain, 4, [8])[0]
    iv = bytes(16)
    a = oracle_encrypt(esn, p, 3, iv=iv)
    b = oracle_encrypt(plain, p, 3, iv=iv)
    assert a[:-12] == b[:-12] and a[-12:] != b[-12:]
    _, drops = run(engine_for(esn, "in"), [b, a], "decrypt")
    assert drops == [Drop.AUTH_FAILED, Drop.NONE]
    _, drops = run(engine_for(plain, "in"), [a, b], "decrypt")
    assert drops == [Drop.AUTH_FAILED, Drop.NONE]


# ---------------------------------------------------------------------------------------
# IPv4 fragments: the kernel fragments what exceeds the tunnel interface's MTU; each
# fragment travels whole in a tunnel-mode SA (RFC 4301 7) and the far end reassembles.
# ---------------------------------------------------------------------------------------
def _fragments(size: int, fragsize: int = 1400) -> tuple[bytes, list[bytes]]:
    from scapy.layers.inet import fragment
    src, dst = INNER[4]
    whole = IP(src=src, dst=dst, id=4242) / UDP(sport=5001, dport=5201) / Raw(bytes(
        (k * 7) & 0xFF for k in range(size)))
    return bytes(whole), [bytes(f) for f in fragment(whole, fragsize=fragsize)]


@pytest.mark.parametrize("alg", TOPO_ALGS[:3] + TOPO_ALGS[4:5], ids=alg_id)
def test_ipv4_fragments_through_a_tunnel(alg):
    from scapy.layers.inet import defragment
    whole, frags = _fragments(3000)
    assert len(frags) == 3
    cfg = make_sa(alg)
    outs = check_engine_to_scapy(cfg, frags)           # scapy decrypts each fragment
    dec, _ = run(engine_for(cfg, "in"), outs, "decrypt")
    assert dec == frags
    assert bytes(defragment([IP(f) for f in dec])[0]) == whole


def test_ipv4_fragments_and_port_selectors():
    """Only the first fragment carries the ports: later ones cannot match a port
    selector (no_policy); transport mode refuses fragments (malformed)."""
    _, frags = _fragments(3000)
    src, dst = INNER[4]
    alg = TOPO_ALGS[0]
    sel = Selector(src=net(src + "/32"), dst=net(dst + "/32"), proto=17, dport=5201)
    _, drops = run(engine_for(make_sa(alg, sel=sel), "out"), frags, "encrypt")
    assert drops == [Drop.NONE, Drop.NO_POLICY, Drop.NO_POLICY]
    _, drops = run(engine_for(make_sa(alg, mode=MODE_TRANSPORT), "out"), frags, "encrypt")
    assert drops == [Drop.MALFORMED] * 3
