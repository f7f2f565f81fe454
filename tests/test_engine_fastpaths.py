"""The engine's hot-path shortcuts give the same results as the general code they skip.

- kernels compiled without Numba reference counting (engine/kernels_ip.JIT);
- no AH passes when no AH SA is installed (engine/sad.py ah_in / ah_out): protocol 51
  packets are then dropped by kernels_esp.prepare_decrypt, as kernels_ah would drop them;
- IPv4 selectors matched as 32-bit network and mask (kernels_esp.selector_match);
- the in-order replay step with a mask (kernels_esp.accept_in_order), against a
  per-packet model of RFC 4303 3.4.3.
"""
from __future__ import annotations

import ipaddress
import struct

import numba as nb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import kernels_ah, kernels_esp
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.kernels_ip import JIT
from engine.sa import MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig, Selector

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


def esp_sa(spi=0x1000, window=64, sel=None) -> SAConfig:
    return SAConfig(src=A, dst=B, proto=PROTO_ESP, spi=spi, mode=MODE_TUNNEL,
                    replay_window=window, aead="rfc4106(gcm(aes))", aead_key=bytes(range(20)),
                    icv_bits=128, sel=sel)


def ah_sa(spi=0x2000) -> SAConfig:
    return SAConfig(src=A, dst=B, proto=PROTO_AH, spi=spi, mode=MODE_TUNNEL,
                    auth="hmac(sha1)", auth_key=bytes(range(20)), icv_bits=96)


def csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto: int, payload: bytes) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                              ipaddress.ip_address(src).packed,
                              ipaddress.ip_address(dst).packed))
    h[10:12] = csum(bytes(h)).to_bytes(2, "big")
    return bytes(h) + payload


def udp4(src, dst, n: int = 0) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", 1000, 2000, 8 + 4, 0) + n.to_bytes(4, "big"))


def run(eng: Engine, pkts: list[bytes], direction: str) -> list[int]:
    b = PacketBatch.from_packets(pkts)
    (eng.encrypt if direction == "out" else eng.decrypt)(b)
    return b.drop[:b.count].tolist()


# -- Numba flags --------------------------------------------------------------------------
def test_kernels_use_the_shared_options():
    for k in (kernels_esp.prepare_encrypt, kernels_esp.finish_encrypt,
              kernels_esp.prepare_decrypt, kernels_esp.finish_decrypt,
              kernels_ah.prepare_encrypt_ah, kernels_ah.finish_encrypt_ah,
              kernels_ah.prepare_decrypt_ah, kernels_ah.finish_decrypt_ah):
        assert k.targetoptions.get("_nrt") is False, k.__name__


def test_nrt_off_leaves_no_reference_counting():
    """`_nrt` has a leading underscore: if Numba stopped honouring it, nothing would fail,
    only every inlined helper taking an array would cost atomic increments per packet."""
    eng = Engine(max_sas=4)
    eng.install(esp_sa(), "out")
    run(eng, [udp4("10.1.0.1", "10.2.0.1")], "out")
    sig = kernels_esp.finish_encrypt.signatures[0]
    fresh = {}
    for nrt in (True, False):
        f = nb.njit(**{**JIT, "cache": False, "_nrt": nrt})(kernels_esp.finish_encrypt.py_func)
        f.compile(sig)
        fresh[nrt] = f.inspect_llvm(sig)
    assert "NRT_incref" in fresh[True]          # the check below can see them
    assert "NRT_incref" not in fresh[False] and "NRT_decref" not in fresh[False]


# -- no AH SA: no AH passes ---------------------------------------------------------------
def test_without_ah_sas_ah_packets_drop_as_before():
    ah_hdr = struct.pack("!BBHII", 4, 4, 0, 0x2000, 1) + bytes(12)
    pkts = [ipv4(A, B, 51, ah_hdr + udp4("10.1.0.1", "10.2.0.1")),   # whole: NO_SA
            ipv4(A, B, 51, ah_hdr[:11]),                              # truncated: MALFORMED
            ipv4(A, B, 51, b"")]
    plain = Engine(max_sas=4)
    plain.install(esp_sa(), "in")
    assert plain.sad.ah_in == 0
    with_ah = Engine(max_sas=4)
    with_ah.install(esp_sa(), "in")
    with_ah.install(ah_sa(spi=0x3000), "in")     # another SPI: the packets still have no SA
    assert with_ah.sad.ah_in == 1
    got = run(plain, pkts, "in")
    assert got == [Drop.NO_SA, Drop.MALFORMED, Drop.MALFORMED]
    assert got == run(with_ah, pkts, "in")
    assert plain.stats() == with_ah.stats()


def test_ah_passes_come_and_go_with_ah_sas():
    eng = Engine(max_sas=4)
    h = eng.install(ah_sa(), "out")
    assert (eng.sad.ah_out, eng.sad.esp_openssl + eng.sad.esp_mb) == (1, 0)
    assert run(eng, [udp4("10.1.0.1", "10.2.0.1")], "out") == [0]
    eng.remove(h)
    assert eng.sad.ah_out == 0
    assert run(eng, [udp4("10.1.0.1", "10.2.0.1")], "out") == [Drop.NO_POLICY]


# -- IPv4 selectors as masks ----------------------------------------------------------------
addr4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@st.composite
def prefixes(draw):
    a = draw(addr4)
    return ipaddress.ip_network(f"{a}/{draw(st.integers(0, 32))}", strict=False)


@settings(max_examples=60, deadline=None)
@given(prefixes(), prefixes(), st.lists(st.tuples(addr4, addr4), min_size=1, max_size=8),
       st.booleans())
def test_ipv4_selector_masks(src_net, dst_net, addrs, near):
    if near:    # addresses inside or just outside the prefixes, not only far away
        addrs = [(src_net.network_address + (int(s) & 3), dst_net[-1] + (int(d) & 1))
                 if int(dst_net[-1]) < 2**32 - 1 else (s, d) for s, d in addrs]
    eng = Engine(max_sas=4)
    eng.install(esp_sa(sel=Selector(src_net, dst_net)), "out")
    got = run(eng, [udp4(s, d) for s, d in addrs], "out")
    want = [0 if s in src_net and d in dst_net else Drop.NO_POLICY for s, d in addrs]
    assert got == want


# -- in-order replay step -------------------------------------------------------------------
def replay_model(window: int, seqs: list[int]) -> list[int]:
    """RFC 4303 3.4.3, one packet at a time: a set of seen numbers and the right edge."""
    top, seen, out = 0, set(), []
    for q in seqs:
        if q == 0 or q in seen or (q <= top and top - q >= window):
            out.append(Drop.REPLAY)
            continue
        seen.add(q)
        top = max(top, q)
        out.append(0)
    return out


@pytest.fixture(scope="module")
def sealed():
    """ESP packets with sequence numbers 1..600 (index q-1)."""
    eng = Engine(max_sas=4)
    eng.install(esp_sa(), "out")
    b = PacketBatch.from_packets([udp4("10.1.0.1", "10.2.0.1", q) for q in range(1, 601)])
    eng.encrypt(b)
    assert not b.drop[:b.count].any()
    return b.packets()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([1, 32, 64, 100, 129, 1024]),
       st.lists(st.lists(st.one_of(st.integers(1, 600), st.just(-1)), min_size=1, max_size=40),
                min_size=1, max_size=4))
def test_replay_in_order_step_matches_model(sealed, window, batches):
    """Batches of mostly-increasing numbers (-1: the next one), with duplicates, jumps and
    old packets; window sizes whose ring is and is not a power of two words."""
    eng = Engine(max_sas=4)
    eng.install(esp_sa(window=window), "in")
    nxt, seqs, got = 1, [], []
    for raw in batches:
        batch = []
        for q in raw:
            if q == -1:
                q, nxt = nxt, min(nxt + 1, 600)
            batch.append(q)
        seqs += batch
        got += run(eng, [sealed[q - 1] for q in batch], "in")
    assert got == replay_model(window, seqs)
