"""SPU workers (engine/spu.py, engine/anchor.py): anchoring, equivalence with one engine,
order per SA, worker failure (SIGKILL, hang) and scale-out, counters, clean shutdown.

The oracle for the data path is the single in-process Engine, whose output the rest of the
suite checks against RFC vectors, scapy and tshark: N workers must produce exactly its
decrypt output and counters, and encrypt output that decrypts to the same packets.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from engine import ring
from engine.anchor import N_LOGICAL, AnchorMap, allocate_spi, anchor_of, logical_of, spi_logical
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.kernels_esp import selector_match
from engine.kernels_ip import parse_ip, ports_of
from engine.kernels_dispatch import LOST
from engine.pcap import read_pcap, write_pcap
from engine.replay import advance, check, words_for_window
from engine.sa import parse_sa_text
from engine.spu import REGION, SpuCluster, SpuError
from engine.spu_balance import choose_move
from engine.spu_bench import tunnels
from engine.spu_worker import mark_seen_through

REPO = Path(__file__).resolve().parents[1]
LOCAL4, LOCAL6 = "192.0.2.1", "2001:db8::1"
WAIT = 60          # seconds: bound on every wait for a subprocess or a worker
CONTRACT_KEYS = ("packets_in", "packets_out", "dropped")


# -- helpers ------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test leaves no worker process and no shared-memory segment behind."""
    before = set(ring.leaked(os.getpid()))       # ours only: other test runs may be live
    yield
    assert multiprocessing.active_children() == []
    assert set(ring.leaked(os.getpid())) - before == set()


def csum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(src, dst, proto, payload: bytes, ident: int = 0) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF,
                              0, 64, proto, 0, ipaddress.ip_address(src).packed,
                              ipaddress.ip_address(dst).packed))
    struct.pack_into("!H", h, 10, csum(bytes(h)))
    return bytes(h) + payload


def udp4(src, dst, sport, dport, data: bytes, ident: int = 0) -> bytes:
    return ip4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, ident)


def udp6(src, dst, sport, dport, data: bytes) -> bytes:
    return (struct.pack("!IHBB16s16s", 0x60000000, 8 + len(data), 17, 64,
                        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
            + struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def ether(pkt: bytes) -> bytes:
    etype = 0x0800 if pkt[0] >> 4 == 4 else 0x86DD
    return bytes.fromhex("020000000002020000000001") + struct.pack("!H", etype) + pkt


def hexkey(n: int, seed: int) -> str:
    return "0x" + bytes((seed * 37 + i * 11) & 0xFF for i in range(n)).hex()


def spu_of(anchor, workers: int = 2) -> int:
    """The SPU of an anchor in a fresh cluster of `workers` (AnchorMap is round robin)."""
    return logical_of(anchor) % workers


def pick_peers(base: str, want: list[int], ports=(500, 500)) -> list[str]:
    """Peer addresses after `base` whose anchors with us land on the SPUs in `want`."""
    out, host = [], 0
    local = LOCAL6 if ":" in base else LOCAL4
    for w in want:
        while True:
            host += 1
            peer = str(ipaddress.ip_address(base) + host)
            if spu_of((local, peer, *ports)) == w:
                out.append(peer)
                break
    return out


def run_spu(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=WAIT * 3)


def esp_fields(b: PacketBatch, sel: np.ndarray, esp_at: int = 20):
    """(SPI, seq) of the ESP packets b.off[sel] (outer IPv4 header without options)."""
    o = b.off[:b.count][sel] + esp_at
    f = b.buf[o[:, None] + np.arange(8)].astype(np.uint64)
    spi = (f[:, 0] << 24) | (f[:, 1] << 16) | (f[:, 2] << 8) | f[:, 3]
    seq = (f[:, 4] << 24) | (f[:, 5] << 16) | (f[:, 6] << 8) | f[:, 7]
    return spi, seq


# -- anchoring math -------------------------------------------------------------------------
def test_logical_hash_is_stable_symmetric_and_spread():
    # golden values: the hash must be the same in every process and every run
    assert logical_of(("192.0.2.1", "192.0.2.2", 500, 500)) == 250
    assert logical_of(("2001:db8::1", "2001:db8::2", 4500, 4500)) == 55
    rnd = random.Random(1)
    hist = np.zeros(N_LOGICAL, int)
    for _ in range(20000):
        a = str(ipaddress.ip_address(rnd.getrandbits(32)))
        b = str(ipaddress.ip_address(rnd.getrandbits(32)))
        sp, dp = rnd.choice([(500, 500), (4500, 4500), (4500, 31000)])
        lg = logical_of((a, b, sp, dp))
        assert lg == logical_of((b, a, dp, sp))            # both directions: one anchor
        assert 0 <= lg < N_LOGICAL
        hist[lg] += 1
    assert hist.min() > 40 and hist.max() < 130             # mean 78: no hot logical SPU
    assert logical_of(("10.0.0.1", "10.0.0.2", 500, 500)) != \
        logical_of(("10.0.0.1", "10.0.0.2", 4500, 500))     # the ports are in the tuple


def test_sa_pair_and_child_sas_share_the_anchor():
    text = (f"src {LOCAL4} dst 198.51.100.7 proto esp spi 0x100 aead 'rfc4106(gcm(aes))' "
            f"{hexkey(20, 1)} 128\n"
            f"src 198.51.100.7 dst {LOCAL4} proto esp spi 0x200 aead 'rfc4106(gcm(aes))' "
            f"{hexkey(20, 2)} 128\n"
            f"src {LOCAL4} dst 198.51.100.7 proto esp spi 0x300 aead 'rfc4106(gcm(aes))' "
            f"{hexkey(20, 3)} 128 encap espinudp 4500 4500 0.0.0.0\n")
    out, inb, natt = parse_sa_text(text)
    assert anchor_of(out) == (out.src, out.dst, 500, 500)
    assert logical_of(anchor_of(out)) == logical_of(anchor_of(inb))
    assert anchor_of(natt)[2:] == (4500, 4500)


def test_spi_encodes_the_logical_spu():
    rnd = random.Random(2)
    for lg in (0, 1, 77, 255):
        taken: set[int] = set()
        for _ in range(50):
            spi = allocate_spi(lg, taken, rng=rnd)
            assert spi_logical(spi) == lg and spi > 255 and spi not in taken
            taken.add(spi)
    with pytest.raises(ValueError):
        allocate_spi(N_LOGICAL)


def _balanced(m: AnchorMap) -> bool:
    c = m.counts().values()
    return max(c) - min(c) <= 1 and sum(c) == m.n_logical


def test_anchor_map_remove_moves_only_the_dead_spus_slots():
    m = AnchorMap([0, 1, 2])
    assert _balanced(m) and m.counts() == {0: 86, 1: 85, 2: 85}
    before = m.owner.copy()
    moved = m.remove(1)
    assert moved == [lg for lg in range(N_LOGICAL) if before[lg] == 1]
    changed = np.flatnonzero(m.owner != before)
    assert sorted(changed.tolist()) == moved                  # nothing else moved
    assert set(m.owner[moved].tolist()) <= {0, 2} and _balanced(m)
    assert m.remove(7) == []                                   # unknown SPU: nothing moves
    with pytest.raises(ValueError):
        AnchorMap([0]).remove(0)


def test_anchor_map_add_moves_a_minimal_set():
    m = AnchorMap([0, 1])
    before = m.owner.copy()
    moved = m.add(2)
    assert len(moved) == N_LOGICAL // 3                         # the least any balance needs
    assert sorted(np.flatnonzero(m.owner != before).tolist()) == moved
    assert set(m.owner[moved].tolist()) == {2} and _balanced(m)
    with pytest.raises(ValueError):
        m.add(2)


def _near_shares(m: AnchorMap) -> bool:
    counts, shares = m.counts(), m.shares()
    return sum(counts.values()) == m.n_logical and \
        all(abs(counts[s] - shares[s]) < 1 for s in counts)


def test_weighted_anchor_map_gives_a_lighter_spu_its_share():
    """A lighter SPU (the dispatcher's own, host_weight) gets its share of the logical SPUs,
    spread through logical space like everyone's."""
    m = AnchorMap([0, 1, 2], weights={0: 1 / 3})
    assert _near_shares(m) and m.counts()[0] in (36, 37)       # 256 * (1/3) / (7/3)
    assert set(m.owner[:7].tolist()) == {0, 1, 2}               # neighbours spread out
    with pytest.raises(ValueError):
        AnchorMap([0, 1], weights={1: 0})
    with pytest.raises(ValueError):
        m.add(99, -1.0)


@pytest.mark.parametrize("first, weights", [({}, [1.0]), ({0: 1 / 3}, [0.25, 1.0, 2.0])],
                         ids=["equal", "weighted"])
def test_anchor_map_random_history_keeps_shares_with_minimal_moves(first, weights):
    """Failures and additions move only what they must, and every count stays within one
    of its (weighted) share: with equal weights, within one of every other count."""
    rnd = random.Random(3)
    m = AnchorMap([0, 1], weights=first)
    live, nxt = {0, 1}, 2
    for _ in range(60):
        before = m.owner.copy()
        if len(live) > 1 and rnd.random() < 0.5:
            dead = rnd.choice(sorted(live))
            moved = m.remove(dead)
            live.discard(dead)
            assert set(before[moved].tolist()) == {dead}
        elif len(live) < 12:
            w = rnd.choice(weights)
            total = sum(m.weights[s] for s in live)
            moved = m.add(nxt, w)
            assert len(moved) == int(N_LOGICAL * w // (total + w))
            assert set(m.owner[moved].tolist()) == {nxt}
            live.add(nxt)
            nxt += 1
        else:
            continue
        assert sorted(np.flatnonzero(m.owner != before).tolist()) == sorted(moved)
        assert set(m.spus()) == live and _near_shares(m)
        if len(weights) == 1:
            assert _balanced(m)


@pytest.mark.parametrize("window", [1, 32, 64, 100, 1024])
@pytest.mark.parametrize("top", [0, 5, 63, 64, 1000, (1 << 32) + 7])
def test_conservative_window_resume(window, top):
    """After a failure the window restarts at the last reported edge with every number up
    to it seen: nothing old passes, everything newer does, also inside the edge's word."""
    words = int(words_for_window(window))
    bm = np.zeros(words, np.uint64)
    mark_seen_through(bm, 0, words, top)
    for q in range(max(1, top - window - 70), top + 140):
        assert check(bm, 0, words, np.uint64(top), window, np.uint64(q)) == (q > top), q
    tops = np.array([top], np.uint64)
    assert advance(bm, 0, words, tops, 0, window, np.uint64(top + 3))
    assert check(bm, 0, words, tops[0], window, np.uint64(top + 1)) == (window > 2)
    assert not check(bm, 0, words, tops[0], window, np.uint64(top + 3))


# -- a capture with several SAs between different peers, and noise ---------------------------
SPU_PLAN = [0, 1, 0, 1, 0, 1]      # SPU of each peer below in a 2-worker cluster


def sa_world():
    """SA lines (our side 192.0.2.1 / 2001:db8::1) and a function making their traffic."""
    pa, pb, pe, pt = pick_peers("198.51.100.0", [SPU_PLAN[0], SPU_PLAN[1], SPU_PLAN[2],
                                                 SPU_PLAN[3]])
    (pc,) = pick_peers("203.0.113.0", [SPU_PLAN[4]], ports=(4500, 4500))
    (pd,) = pick_peers("2001:db8:1::", [SPU_PLAN[5]])
    gcm = "aead 'rfc4106(gcm(aes))' {} 128"
    lines = [
        f"src {LOCAL4} dst {pa} proto esp spi 0x1001 mode tunnel replay-window 64 "
        f"{gcm.format(hexkey(20, 1))} sel src 10.1.0.0/16 dst 10.2.1.0/24",
        f"src {LOCAL4} dst {pb} proto esp spi 0x1002 mode tunnel replay-window 32 flag esn "
        f"replay-oseq 0xfffffff0 replay-seq 0xffffffe0 enc 'cbc(aes)' {hexkey(16, 2)} "
        f"auth-trunc 'hmac(sha1)' "
        f"{hexkey(20, 3)} 96 sel src 10.1.0.0/16 dst 10.2.2.0/24",
        f"src {LOCAL4} dst {pc} proto esp spi 0x1003 mode tunnel {gcm.format(hexkey(20, 4))} "
        f"encap espinudp 4500 4500 0.0.0.0 sel src 10.1.0.0/16 dst 10.2.3.0/24",
        f"src {LOCAL6} dst {pd} proto esp spi 0x1004 mode tunnel "
        f"aead 'rfc7539esp(chacha20,poly1305)' {hexkey(36, 5)} 128 "
        f"sel src fd00:1::/64 dst fd00:2::/64",
        f"src {LOCAL4} dst {pe} proto ah spi 0x1005 mode tunnel "
        f"auth-trunc 'hmac(sha256)' {hexkey(32, 6)} 128 sel src 10.1.0.0/16 dst 10.2.5.0/24",
        f"src {LOCAL4} dst {pa} proto esp spi 0x1006 mode tunnel {gcm.format(hexkey(20, 7))} "
        f"sel src 10.1.0.0/16 dst 10.2.6.0/24",                   # a child SA of pa's IKE SA
        f"src {LOCAL4} dst {pt} proto esp spi 0x1007 mode transport "
        f"{gcm.format(hexkey(20, 8))} sel src {LOCAL4} dst {pt}",
    ]
    peers = {"a": pa, "b": pb, "c": pc, "d": pd, "e": pe, "t": pt}

    def plain(n: int) -> list[bytes]:
        out = []
        for j in range(n):
            k = j % 7
            data = struct.pack("!I", j) + bytes((j * 7 + i) & 0xFF for i in range(
                20 + (j * 37) % 1200))
            if k == 3:
                out.append(udp6(f"fd00:1::{j % 200 + 1:x}", f"fd00:2::{j % 50 + 1:x}",
                                1000 + j % 100, 2000, data))
            elif k == 6:
                out.append(udp4(LOCAL4, pt, 1000 + j % 100, 2000, data, j))
            else:
                dst_net = {0: 1, 1: 2, 2: 3, 4: 5, 5: 6}[k]
                out.append(udp4(f"10.1.{j % 250}.{j % 200 + 1}", f"10.2.{dst_net}.{j % 50 + 1}",
                                1000 + j % 100, 2000, data, j))
        return out

    return "\n".join(lines) + "\n", peers, plain


def engine_run(sa_text: str, direction: str, packets: list[bytes]):
    """The oracle: one in-process engine over the packets, in batches of 1024."""
    eng = Engine()
    for cfg in parse_sa_text(sa_text):
        eng.install(cfg, "out" if direction == "encrypt" else "in")
    out, drops = [], []
    for lo in range(0, len(packets), 1024):
        b = PacketBatch.from_packets(packets[lo:lo + 1024])
        (eng.encrypt if direction == "encrypt" else eng.decrypt)(b)
        out += b.packets()
        drops += b.drop[:b.count].tolist()
    return out, drops, eng.stats()


def noisy_esp_capture(sa_text: str, peers: dict, plain: list[bytes]) -> list[bytes]:
    esp, drops, _ = engine_run(sa_text, "encrypt", plain)
    assert not any(drops)
    cap = list(esp)
    spi_a = 0x1001

    def ins(pos, pkt):
        cap.insert(pos, pkt)

    # later positions first, so that earlier indices stay meaningful
    bad_icv = bytearray(esp[1610])
    bad_icv[-1] ^= 1
    ins(1610, bytes(bad_icv))                                    # auth_failed (original follows)
    ins(1500, esp[1450])                                         # replay
    ins(700, ip4(LOCAL4, peers["e"], 51, b"\x04\x04\0\0"))       # AH cut short: malformed
    ins(600, ip4(LOCAL4, peers["a"], 50, struct.pack("!II", spi_a, 99999) + bytes(4)))  # short
    bad_sum = bytearray(esp[450])
    bad_sum[10] ^= 0xFF
    ins(500, bytes(bad_sum))                                     # IPv4 checksum: malformed
    ins(400, udp4(LOCAL4, peers["a"], 5353, 53, b"query"))        # not IPsec: no_sa
    ins(300, ip4(LOCAL4, peers["a"], 50, struct.pack("!II", 0xDEADBEEF, 1) + bytes(40)))
    ins(200, udp4(peers["c"], LOCAL4, 4500, 4500, bytes(4) + b"IKE_SA_INIT"))  # non-ESP marker
    ins(100, udp4(peers["c"], LOCAL4, 4500, 4500, b"\xff"))       # NAT keepalive
    # an inner packet outside the selector, under SA 0x1001's keys, far ahead in sequence
    first = sa_text.splitlines()[0]
    rogue = first.split(" sel ")[0] + " replay-oseq 100000\n"
    ev, _, _ = engine_run(rogue, "encrypt", [udp4("10.9.9.9", "10.9.9.8", 1, 2, b"x" * 30)])
    cap.append(ev[0])                                            # policy_mismatch
    return cap


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("spu")
    sa_text, peers, make = sa_world()
    plain = make(3000)
    (d / "sa.conf").write_text(sa_text)
    cap = noisy_esp_capture(sa_text, peers, plain)
    frames = [ether(p) for p in cap]
    frames.insert(50, bytes(12) + b"\x08\x06" + bytes(28))       # ARP: not IP, malformed
    write_pcap(d / "esp.pcap", frames, linktype=1)
    write_pcap(d / "plain.pcap", plain, linktype=101)
    return {"dir": d, "sa_text": sa_text, "peers": peers, "plain": plain, "esp": cap}


def test_decrypt_with_two_workers_is_identical_to_one(world):
    d = world["dir"]
    runs = {}
    for w in (1, 2):
        p = run_spu("decrypt", "--sa", d / "sa.conf", d / "esp.pcap", d / f"dec{w}.pcap",
                    "--stats-json", d / f"dec{w}.json", "--workers", w)
        assert p.returncode == 0, p.stderr
        runs[w] = json.loads((d / f"dec{w}.json").read_text())
    assert (d / "dec1.pcap").read_bytes() == (d / "dec2.pcap").read_bytes()
    one, two = runs[1], runs[2]
    assert {k: two[k] for k in CONTRACT_KEYS} == one
    assert two["lost"] == 0
    dropped = {k: v for k, v in one["dropped"].items() if v}
    assert dropped == {"no_sa": 3, "malformed": 4, "keepalive": 1, "replay": 1,
                       "auth_failed": 1, "policy_mismatch": 1}
    # per-SPU counters add up to the totals, and both SPUs had work
    spus, disp = two["spus"], two["dispatch"]
    assert len(spus) == 2 and all(s["alive"] and s["packets_in"] > 500 for s in spus)
    assert sum(s["packets_in"] for s in spus) + disp["packets_in"] == two["packets_in"]
    assert sum(s["packets_out"] for s in spus) == two["packets_out"]
    for reason, n in two["dropped"].items():
        assert sum(s["dropped"][reason] for s in spus) + disp["dropped"][reason] == n
    assert disp["dropped"]["no_sa"] == 3 and disp["dropped"]["keepalive"] == 1
    assert sum(s["logical"] for s in spus) == N_LOGICAL
    # and the recovered packets are the plaintext
    got = [p for _, p in read_pcap(d / "dec2.pcap")]
    assert [g[14:] for g in got] == world["plain"]


def test_encrypt_with_two_workers_decrypts_to_the_same_packets(world):
    d = world["dir"]
    p = run_spu("encrypt", "--sa", d / "sa.conf", d / "plain.pcap", d / "enc2.pcap",
                "--stats-json", d / "enc2.json", "--workers", 2)
    assert p.returncode == 0, p.stderr
    stats = json.loads((d / "enc2.json").read_text())
    assert stats["packets_out"] == len(world["plain"]) and stats["lost"] == 0
    enc = [p for _, p in read_pcap(d / "enc2.pcap")]
    back, drops, _ = engine_run(world["sa_text"], "decrypt", enc)
    assert not any(drops) and back == world["plain"]
    # AEAD SAs have deterministic output (IV = sequence number): byte-identical to one
    # engine, which also shows every SA's packets kept their order
    ref, _, _ = engine_run(world["sa_text"], "encrypt", world["plain"])
    assert len(enc) == len(ref)
    for j, (a, b) in enumerate(zip(enc, ref)):
        if j % 7 != 1:                    # all but CBC (random IVs): the same bytes
            assert a == b, j


def test_sas_land_on_their_anchor_spu(world):
    sas = parse_sa_text(world["sa_text"])
    with SpuCluster(2, capacity=256) as cl:
        hs = [cl.install(cfg, "out") for cfg in sas]
        for h, cfg in zip(hs, sas):
            assert cl.spu_of(h) == cl.anchors.of(logical_of(anchor_of(cfg)))
        assert [cl.spu_of(h) for h in hs[:5]] == [0, 1, 0, 1, 0]     # SPU_PLAN
        assert cl.spu_of(hs[5]) == cl.spu_of(hs[0])                  # child SA, same IKE SA
        # an explicit IKE 4-tuple (as the IKE daemon passes it) decides, not the SA's ends
        anchor = ("203.0.113.77", LOCAL4, 4500, 4500)
        cfg = parse_sa_text(f"src {LOCAL4} dst 198.51.100.250 proto esp spi 0x2001 "
                            f"aead 'rfc4106(gcm(aes))' {hexkey(20, 9)} 128\n")[0]
        h = cl.install(cfg, "in", anchor=anchor)
        assert cl.sa_stats(h)["logical"] == logical_of(anchor)
        assert cl.spu_of(h) == cl.anchors.of(logical_of(anchor))
        cl.remove(h)
        assert h not in cl.handles()


def test_process_api_matches_engine_and_remove_takes_effect(world):
    sa_text, plain = world["sa_text"], world["plain"][:900]
    ref, ref_drops, ref_stats = engine_run(sa_text, "encrypt", plain)
    with SpuCluster(2, capacity=1024) as cl:
        hs = [cl.install(cfg, "out") for cfg in parse_sa_text(sa_text)]
        b = PacketBatch.from_packets(plain)
        cl.encrypt(b)
        assert b.drop[:b.count].tolist() == ref_drops
        enc = b.packets()
        assert [e for j, e in enumerate(enc) if j % 7 != 1] == \
            [r for j, r in enumerate(ref) if j % 7 != 1]
        assert {k: cl.stats()[k] for k in CONTRACT_KEYS} == ref_stats
        total = sum(cl.sa_stats(h)["packets"] for h in hs)
        assert total == cl.stats()["packets_out"] == len(plain)
        cl.remove(hs[0])                        # 10.2.1.0/24 has no policy any more
        b = PacketBatch.from_packets(plain[:14])
        cl.encrypt(b)
        assert [int(x) for x in b.drop[:14:7]] == [Drop.NO_POLICY, Drop.NO_POLICY]
        assert not b.drop[1:7].any()


def test_one_hosted_spu_runs_whole_batches_like_the_engine(world):
    """One SPU, the dispatcher's own: a batch whose every packet has an SA goes to the
    engine as it is (no gather or scatter), with the engine's output and drops."""
    sa_text = world["sa_text"]
    plain = [p for j, p in enumerate(world["plain"][:900]) if j % 7 != 0]
    ref, ref_drops, ref_stats = engine_run(sa_text, "encrypt", plain)
    assert not any(ref_drops)
    with SpuCluster(1, capacity=1024, host_spu=True) as cl:
        for cfg in parse_sa_text(sa_text):
            cl.install(cfg, "out")

        def gathered(*args, **kwargs):
            raise AssertionError("a whole batch went through gather/scatter")
        cl._spus[0].hosted.run = gathered
        b = PacketBatch.from_packets(plain)
        cl.encrypt(b)
        assert not b.drop[:b.count].any()
        enc = b.packets()
        # (but the AES-CBC SA's packets: random IVs)
        assert [e for j, e in enumerate(enc) if j % 6 != 0] == \
            [r for j, r in enumerate(ref) if j % 6 != 0]
        assert {k: cl.stats()[k] for k in CONTRACT_KEYS} == ref_stats


# -- the arrival area: packets copied in by their owner SPU ------------------------------------
def arrival_filler(cl: SpuCluster, packets: list[bytes]):
    """fill() that leaves the packets in the cluster's arrival area, one after another,
    and points the batches at them (SpuCluster.arrive_many)."""
    lens = np.array([len(p) for p in packets], np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    cl.arrival[:lens.sum()] = np.frombuffer(b"".join(packets), np.uint8)
    pos = [0]

    def fill(b: PacketBatch) -> int:
        got = cl.arrive_many(b, starts[pos[0]:], lens[pos[0]:])
        pos[0] += got
        return got

    return fill


def owners_along_the_buffer(cl: SpuCluster, b: PacketBatch, dispatch_drops) -> list:
    """The owner SPU of each packet (None: dropped by the dispatcher), in buffer order,
    with each run's first slot."""
    runs = []
    for i in np.argsort(b.slot_start[:b.count], kind="stable"):
        who = None if i in dispatch_drops else cl.spu_of(int(b.sa[i]))
        if not runs or runs[-1][0] != who:
            runs.append((who, int(b.slot_start[i])))
    return runs


@pytest.mark.parametrize("copy", ["owner", "dispatcher"])
@pytest.mark.parametrize("host_spu", [False, True], ids=["dedicated", "hosted"])
def test_arrival_area_keeps_the_output_and_gives_each_spu_a_region(world, copy, host_spu):
    """Decrypt the noisy capture (every drop reason) and encrypt the cleartext with the
    packets left in the arrival area: the same bytes, drops and counters as one engine;
    packets dropped by the dispatcher are in the batch too; each SPU's packets lie side
    by side in a page-aligned region of their own."""
    sa_text, esp, plain = world["sa_text"], world["esp"], world["plain"]
    area = sum(map(len, esp)) + sum(map(len, plain))
    for direction, packets in (("decrypt", esp), ("encrypt", plain)):
        ref, ref_drops, ref_stats = engine_run(sa_text, direction, packets)
        with SpuCluster(2, capacity=512, ring=3, host_spu=host_spu, arrival_bytes=area,
                        arrival_copy=copy) as cl:
            for cfg in parse_sa_text(sa_text):
                cl.install(cfg, "out" if direction == "encrypt" else "in")
            out, drops = [], []
            for b in cl.stream(direction, arrival_filler(cl, packets)):
                out += b.packets()
                d = b.drop[:b.count].copy()
                drops += d.tolist()
                at_dispatch = {i for i in range(b.count) if d[i] in
                               (Drop.NO_SA, Drop.NO_POLICY, Drop.KEEPALIVE)
                               or (d[i] == Drop.MALFORMED and b.sa[i] < 0)}
                runs = owners_along_the_buffer(cl, b, at_dispatch)
                owners = [w for w, _ in runs]
                assert len(owners) == len(set(owners))        # one run per SPU
                assert all(at % REGION == 0 for w, at in runs if w is not None)
            stats = cl.stats()
        assert drops == ref_drops
        if direction == "decrypt":
            assert out == ref
        else:                            # all but the CBC SA's packets (random IVs)
            assert [o for j, o in enumerate(out) if j % 7 != 1] == \
                [r for j, r in enumerate(ref) if j % 7 != 1]
        assert {k: stats[k] for k in CONTRACT_KEYS} == ref_stats and stats["lost"] == 0


def test_arrival_descriptors_out_of_bounds_are_dropped_and_counted():
    """A fill that points outside the arrival area, mixes arrived and waiting packets,
    or promises more bytes than a batch holds: those packets are dropped MALFORMED by the
    dispatcher (nothing read or written out of bounds), the rest go through."""
    sas = tunnels(T, 2)
    arr, _ = big_plain(64)
    with SpuCluster(2, capacity=64, data_bytes=64 * 256, arrival_bytes=arr.size) as cl:
        for cfg in sas:
            cl.install(cfg, "out")
        cl.arrival[:] = arr.reshape(-1)
        plan = []

        def fill(b: PacketBatch) -> int:
            if len(plan) == 3:
                return 0
            plan.append(len(plan))
            if plan[-1] == 1:                               # one packet copied in, the
                b.add(arr[0].tobytes())                     # rest waiting: a mixed batch
                return 1 + cl.arrive_many(b, np.arange(1, 64) * PKT, np.full(63, PKT))
            n = cl.arrive_many(b, np.arange(64) * PKT, np.full(64, PKT))
            assert n == 64
            if plan[-1] == 0:
                b.arrive_from[5] = arr.size - 10            # runs past the area's end
                b.arrive_from[6] = -7                       # not in the area
                b.length[7] = 1 << 40                       # more than any batch holds
            else:
                b.length[:] = PKT * 4                       # past the batch's bytes
            return n

        got = [(b.drop[:b.count].copy(), [b.packet(i) for i in range(b.count)])
               for b in cl.stream("encrypt", fill)]
        stats = cl.stats(per_spu=True)
    (d0, p0), (d1, _), (d2, _) = got
    assert np.flatnonzero(d0).tolist() == [5, 6, 7] and (d0[[5, 6, 7]] == Drop.MALFORMED).all()
    assert all(len(p0[i]) > PKT for i in range(64) if i not in (5, 6, 7))   # encrypted
    assert d1[0] == 0 and (d1[1:] == Drop.MALFORMED).all()
    # a batch's buffer is 64 * 256 + 64 * 256 bytes (PacketBatch); a 400-byte packet
    # takes a 640-byte slot (headroom 128, tailroom 64, 64-byte aligned)
    fits = (2 * 64 * 256) // 640
    assert not d2[:fits].any() and (d2[fits:] == Drop.MALFORMED).all()
    assert stats["dispatch"]["dropped"]["malformed"] == 3 + 63 + (64 - fits)


def test_arrive_many_takes_what_fits():
    with SpuCluster(1, capacity=8, data_bytes=8 * 256, host_spu=True, arrival_bytes=4096) as cl:
        b = cl.batches[0]
        b.clear()
        assert cl.arrive_many(b, [0, 100, 4000, 0], [100, 100, 100, 10]) == 2    # 4000+100
        assert b.count == 2 and b.arrive_from[:2].tolist() == [0, 100]
        assert cl.arrive_many(b, np.zeros(20, np.int64), np.full(20, 10)) == 6   # capacity
        b.clear()
        big = cl.arrive_many(b, np.zeros(8, np.int64), np.full(8, 1000))
        assert big == 3             # a 4096-byte buffer (PacketBatch), 1216-byte slots
    with SpuCluster(1, capacity=8, host_spu=True) as cl:
        with pytest.raises(SpuError, match="no arrival area"):
            cl.arrive_many(cl.batches[0], [0], [10])


# -- failures and scale-out, through the streaming API -----------------------------------------
T = 8           # tunnels (engine.spu_bench: their anchors spread evenly over 2 workers)
PKT = 100


def big_plain(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n IPv4/UDP packets of PKT bytes, packet i to tunnel i % T, index i in the payload."""
    t = np.frombuffer(udp4("10.1.0.1", "10.2.0.1", 1000, 2000, bytes(PKT - 28)), np.uint8)
    arr = np.tile(t, (n, 1))
    i = np.arange(n, dtype=np.uint32)
    arr[:, 18] = (i % T).astype(np.uint8)
    arr[:, 28:32] = i.astype(">u4").view(np.uint8).reshape(n, 4)
    return arr, i


class Feeder:
    """fill() for SpuCluster.stream from packed packets; ts_ns carries the input index.
    `hooks[k]` runs before batch k is filled. With `arrival` (a cluster's arrival area)
    the packets wait there and the batches point at them."""

    def __init__(self, arr: np.ndarray, hooks=None, arrival: Optional[SpuCluster] = None):
        self.flat = np.ascontiguousarray(arr).reshape(-1)
        self.cluster = arrival
        if arrival is not None:
            arrival.arrival[:self.flat.size] = self.flat
        self.len = arr.shape[1]
        self.n = arr.shape[0]
        self.pos = 0
        self.calls = 0
        self.hooks = hooks or {}

    def __call__(self, b: PacketBatch) -> int:
        if self.calls in self.hooks:
            self.hooks[self.calls]()
        self.calls += 1
        if self.pos >= self.n:
            return 0
        starts = np.arange(self.pos, self.n, dtype=np.int64) * self.len
        lengths = np.full(starts.size, self.len, np.int64)
        if self.cluster is not None:
            got = self.cluster.arrive_many(b, starts, lengths)
        else:
            got = b.add_many(self.flat, starts, lengths)
        b.ts_ns[:got] = np.arange(self.pos, self.pos + got)
        self.pos += got
        return got


def filler(packets: list[bytes]):
    """fill() for SpuCluster.stream over packets held in memory."""
    src = PacketBatch.from_packets(packets)
    pos = [0]

    def fill(b: PacketBatch) -> int:
        k = pos[0]
        if k >= len(packets):
            return 0
        got = b.add_many(src.buf, src.off[k:len(packets)], src.length[k:len(packets)])
        pos[0] += got
        return got

    return fill


def stop_then_kill(pid: int, at: int) -> dict:
    """Freeze a worker before batch `at` is filled (so that batch, at least, is inside it)
    and SIGKILL it 0.3 s later, while the dispatcher waits for it: a kill mid-run with
    work inside the victim, every time."""
    def kill():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop():
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(0.3, kill).start()

    return {at: stop}


@pytest.mark.parametrize("host_spu, arrival", [(False, False), (True, False), (True, True)],
                         ids=["dedicated", "hosted", "hosted-arrival"])
def test_sigkill_mid_capture_encrypt_loses_only_its_packets_and_never_reuses_seq(host_spu,
                                                                                  arrival):
    """SIGKILL one SPU worker mid-capture: of SPUs 0 and 1 both workers (the victim is 0),
    or the dispatcher's own SPU 0 beside worker 1 (the victim is 1; SPU 0 takes over);
    with the capture copied into the batches, or waiting in the arrival area (then the
    survivor copies in the victim's packets of the batches it had not finished)."""
    n = 200_000
    arr, _ = big_plain(n)
    victim, survivor = (1, 0) if host_spu else (0, 1)
    db = PacketBatch(1024, data_bytes=1024 * 256)
    keys, lost_idx, out_idx = [], [], []
    with SpuCluster(2, capacity=1024, ring=4, host_spu=host_spu,
                    arrival_bytes=arr.size if arrival else 0) as cl:
        assert list(cl.pids()) == ([1] if host_spu else [0, 1])  # the hosted SPU: no process
        sas = tunnels(T, cl.anchors.owner)
        dec = Engine()
        for cfg in sas:
            dec.install(cfg, "in")
        hs = [cl.install(cfg, "out") for cfg in sas]
        victim_tunnels = {k for k, h in enumerate(hs) if cl.spu_of(h) == victim}
        assert 0 < len(victim_tunnels) < T
        slots0 = cl.anchors.slots(victim)
        feeder = Feeder(arr, stop_then_kill(cl.pids()[victim], at=60),
                        cl if arrival else None)
        for b in cl.stream("encrypt", feeder):
            m = b.count
            drop = b.drop[:m]
            assert set(np.unique(drop).tolist()) <= {0, int(LOST)}
            lost_idx.append(b.ts_ns[:m][drop == LOST].copy())
            ok = drop == 0
            spi, seq = esp_fields(b, ok)
            keys.append((spi << np.uint64(32)) | seq)
            out_idx.append(b.ts_ns[:m][ok].copy())
            # decrypt what came out with one engine: the same packets, in order
            db.clear()
            got = db.add_many(b.buf, b.off[:m][ok], b.length[:m][ok])
            dec.decrypt(db)
            assert got == int(ok.sum()) and not db.drop[:got].any()
            inner = db.buf[db.off[:got, None] + np.arange(PKT)]
            assert (inner == arr[b.ts_ns[:m][ok]]).all()
        stats = cl.stats(per_spu=True)
        assert cl.live() == [survivor]
        assert cl.moves == [("fail", victim, slots0)]          # its logical SPUs, only those
        assert (cl.anchors.owner == survivor).all()
        assert sum(cl.sa_stats(h)["packets"] for h in hs) >= stats["packets_out"]
    lost = np.concatenate(lost_idx)
    assert stats["packets_in"] == n
    assert stats["lost"] == lost.size > 0 and lost.size <= 4 * 1024
    assert stats["packets_out"] + stats["lost"] == n and not any(stats["dropped"].values())
    assert set((lost % T).tolist()) <= victim_tunnels            # only the dead SPU's packets
    spus = {s["spu"]: s for s in stats["spus"]}
    assert not spus[victim]["alive"] and spus[victim]["lost"] == lost.size
    assert spus[survivor]["lost"] == 0 and spus[survivor]["hosted"] == host_spu
    k = np.concatenate(keys)
    assert np.unique(k).size == k.size                          # no (SPI, seq) twice
    spi, seq = k >> np.uint64(32), k & np.uint64(0xFFFFFFFF)
    for s in np.unique(spi):                                    # and in order per SA
        assert (np.diff(seq[spi == s].astype(np.int64)) > 0).all()
    done = np.concatenate(out_idx)
    assert (np.diff(done) > 0).all()                            # input order kept


def test_sigkill_mid_capture_decrypt_resumes_windows_conservatively():
    n = 100_000
    arr, _ = big_plain(n)
    sas = tunnels(T, 2)
    peer = Engine()
    for cfg in sas:
        peer.install(cfg, "out")
    b = PacketBatch(1024, data_bytes=1024 * 256)
    esp = []
    for lo in range(0, n, 1024):                               # the ESP capture, in memory
        b.clear()
        hi = min(n, lo + 1024)
        b.add_many(arr.reshape(-1), np.arange(lo, hi, dtype=np.int64) * PKT,
                   np.full(hi - lo, PKT, np.int64))
        peer.encrypt(b)
        esp += b.packets()
    width = max(map(len, esp))
    assert width == min(map(len, esp))
    earr = np.frombuffer(b"".join(esp), np.uint8).reshape(n, width)
    with SpuCluster(2, capacity=1024, ring=4) as cl:
        hs = [cl.install(cfg, "in") for cfg in sas]
        victim_tunnels = {k for k, h in enumerate(hs) if cl.spu_of(h) == 0}
        feeder = Feeder(earr, stop_then_kill(cl.pids()[0], at=30))
        lost, seen = [], []
        for out in cl.stream("decrypt", feeder):
            m = out.count
            drop = out.drop[:m]
            assert set(np.unique(drop).tolist()) <= {0, int(LOST)}   # no replay, no auth
            lost.append(out.ts_ns[:m][drop == LOST].copy())
            ok = drop == 0
            idx = out.ts_ns[:m][ok]
            inner = out.buf[out.off[:m][ok][:, None] + np.arange(PKT)]
            assert (out.length[:m][ok] == PKT).all() and (inner == arr[idx]).all()
            seen.append(idx)
        stats = cl.stats()
    lost = np.concatenate(lost)
    assert stats["lost"] == lost.size > 0
    assert stats["packets_out"] + lost.size == n
    assert set((lost % T).tolist()) <= victim_tunnels
    assert np.concatenate(seen).size == stats["packets_out"]


def test_add_worker_mid_stream_moves_minimal_set_with_exact_state():
    """Decrypt with a third SPU joining halfway: output identical to one engine, replays
    across the move still caught (the window bitmap moved exactly)."""
    sa_text, _, make = sa_world()
    plain = make(6000)
    esp, _, _ = engine_run(sa_text, "encrypt", plain)
    cap = esp[:3000] + esp[2940:2990] + esp[3000:]               # replays after the move
    ref, ref_drops, ref_stats = engine_run(sa_text, "decrypt", cap)
    with SpuCluster(2, capacity=512, ring=3) as cl:
        hs = [cl.install(cfg, "in") for cfg in parse_sa_text(sa_text)]
        before = cl.anchors.owner.copy()
        out, out_drops = [], []
        for j, b in enumerate(cl.stream("decrypt", filler(cap))):
            out += b.packets()
            out_drops += b.drop[:b.count].tolist()
            if j == 4:
                new = cl.add_worker()
        assert new == 2 and cl.live() == [0, 1, 2]
        (kind, spu, moved), = cl.moves
        assert (kind, spu) == ("add", 2) and len(moved) == N_LOGICAL // 3
        assert sorted(np.flatnonzero(cl.anchors.owner != before).tolist()) == moved
        assert (cl.anchors.owner[moved] == 2).all()
        assert any(cl.spu_of(h) == 2 for h in hs)              # an SA (0x1002) moved
        stats = cl.stats()
    assert out_drops == ref_drops and out_drops.count(Drop.REPLAY) >= 50
    assert [p for p, d in zip(out, out_drops) if not d] == \
        [p for p, d in zip(ref, ref_drops) if not d]
    assert {k: stats[k] for k in CONTRACT_KEYS} == ref_stats and stats["lost"] == 0


def test_hung_worker_is_treated_as_failed():
    sas = tunnels(T, 2)
    arr, _ = big_plain(2048)
    with SpuCluster(2, capacity=1024, ring=1, timeout=2.0) as cl:
        hs = [cl.install(cfg, "out") for cfg in sas]
        os.kill(cl.pids()[1], signal.SIGSTOP)
        t = time.monotonic()
        out = [b.drop[:b.count].copy() for b in cl.stream("encrypt", Feeder(arr))]
        assert time.monotonic() - t < WAIT
        first, second = out
        victims = {k for k, h in enumerate(hs) if cl.spu_of(h) == 1}
        assert cl.live() == [0] and not victims               # all SAs are on SPU 0 now
        assert (first == LOST).sum() == cl.stats()["lost"] > 0
        assert not second.any()                               # the next batch: all through


def test_cli_worker_sigkill_mid_capture(tmp_path):
    """`spu encrypt --workers 2` over a 200k-packet capture (SPU 0 is the command itself,
    SPU 1 a worker process); SPU 1 killed from outside."""
    n = 200_000
    arr, _ = big_plain(n)
    sas = tunnels(T, 2)
    lines = []
    for cfg in sas:
        lines.append(f"src {cfg.src} dst {cfg.dst} proto esp spi {cfg.spi:#x} mode tunnel "
                     f"replay-window 1024 aead 'rfc4106(gcm(aes))' 0x{cfg.aead_key.hex()} 128 "
                     f"sel src {cfg.sel.src} dst {cfg.sel.dst}")
    (tmp_path / "sa.conf").write_text("\n".join(lines) + "\n")
    write_pcap(tmp_path / "in.pcap", list(arr), linktype=101)
    out = tmp_path / "out.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "encrypt", "--sa",
                             tmp_path / "sa.conf", tmp_path / "in.pcap", out, "--stats-json",
                             tmp_path / "st.json", "--workers", "2"], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        victim = None
        end = time.monotonic() + WAIT
        while time.monotonic() < end and victim is None:
            for p in os.listdir("/proc"):
                if p.isdigit() and _comm(int(p)) == "pyspu-spu1" and \
                        _descends(int(p), proc.pid):
                    victim = int(p)
            time.sleep(0.02)
        assert victim is not None, "no SPU worker appeared"
        while time.monotonic() < end and (not out.exists() or out.stat().st_size < 2_000_000):
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["packets_in"] == n
    assert stats["packets_out"] + stats["lost"] == n
    assert [s["alive"] for s in stats["spus"]] == [True, False]
    assert [s["hosted"] for s in stats["spus"]] == [True, False]
    keys = set()
    for _, p in read_pcap(out):
        key = p[20:28]
        assert key not in keys
        keys.add(key)
    assert len(keys) == stats["packets_out"]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def test_close_leaves_nothing_behind():
    cl = SpuCluster(2, capacity=64)
    pids = list(cl.pids().values())
    names = [s.name for s in cl._res.segments]
    assert all(_alive(p) for p in pids) and set(names) <= set(ring.leaked(os.getpid()))
    cl.close()
    cl.close()                                  # idempotent
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    assert not set(names) & set(ring.leaked())


def _walk_selectors():
    """A kernel: the first outbound SA whose selector (kernels_esp.selector_match) takes
    packet i. Compiled here, after engine/ pointed Numba's cache at its keyed directory."""
    import numba as nb

    @nb.njit
    def walk(buf, off, length, n, rec, addr, spd, out):
        for i in range(n):
            o = off[i]
            ok, ver, hl, tot, proto, l4, nh = parse_ip(buf, o, length[i])
            sport, dport = ports_of(buf, l4, o + tot, proto) if l4 >= 0 else (0, 0)
            for k in range(spd.shape[0]):
                if selector_match(rec, addr, spd[k], buf, o, ver, proto, sport, dport):
                    out[i] = spd[k]
                    break
    return walk


def test_compiled_policy_picks_the_first_match():
    """The SPD lookup of the engine (prepare_encrypt) and of the dispatcher (classify_
    encrypt): compiled selectors behind a flow cache (engine/kernels_spd.py), cold, warm,
    and one so small that flows evict each other, against a plain first-match walk with
    kernels_esp.selector_match, on random selectors and packets."""
    from engine.kernels_dispatch import classify_encrypt
    from engine.kernels_spd import FLOW_EMPTY
    from engine.sa import MODE_TUNNEL, PROTO_ESP, SAConfig, Selector
    from engine.sad import compile_policy
    rnd = random.Random(5)

    def net(v6: bool):
        bits = 128 if v6 else 32
        plen = rnd.choice([0, 1, 7, 8, 15, 16, 23, 24, 31, bits] + ([48, 64, 65, 127] * v6))
        base = rnd.choice([0xFD00 << 112, 0x20010DB8 << 96] if v6 else [10 << 24, 0xC0A80000])
        addr = base | rnd.getrandbits(bits - 16)
        return ipaddress.ip_network((addr, plen), strict=False)

    sas = []
    for k in range(24):
        v6 = rnd.random() < 0.4
        proto = rnd.choice([0, 6, 17, 1])
        sport = rnd.choice([None, 1000 + k]) if proto in (6, 17) else None
        dport = rnd.choice([None, 2000]) if proto in (6, 17) else None
        sel = None if k == 23 else Selector(net(v6), net(v6), proto, sport, dport)
        sas.append(SAConfig(src=ipaddress.ip_address(LOCAL4),
                            dst=ipaddress.ip_address(f"198.51.100.{k + 1}"), proto=PROTO_ESP,
                            spi=0x3000 + k, mode=MODE_TUNNEL, aead="rfc4106(gcm(aes))",
                            aead_key=bytes(20), icv_bits=128, sel=sel))
    # host selectors, first in policy order: their twins differ in the addresses' last bit
    # (IPv6: in the low word)
    for k, (a, b) in enumerate((("fd00::1", "fd00::2"), ("10.9.9.1", "10.9.9.2"))):
        sas.insert(k, dataclasses.replace(
            sas[0], spi=0x3100 + k, dst=ipaddress.ip_address(f"198.51.100.{100 + k}"),
            sel=Selector(ipaddress.ip_network(a), ipaddress.ip_network(b), 17, 4500, 4500)))
    pkts = []
    for j in range(3000):
        cfg = rnd.choice(sas[:-1])
        src = cfg.sel.src.network_address + rnd.randrange(min(cfg.sel.src.num_addresses, 4096))
        dst = cfg.sel.dst.network_address + rnd.randrange(min(cfg.sel.dst.num_addresses, 4096))
        if rnd.random() < 0.2:
            dst = ipaddress.ip_address(int(dst) ^ (1 << rnd.randrange(dst.max_prefixlen)))
        proto = rnd.choice([6, 17, 1, cfg.sel.proto or 17])
        sp, dp = rnd.choice([(1000 + j % 24, 2000), (cfg.sel.sport or 7, cfg.sel.dport or 9)])
        l4 = (struct.pack("!HHHH", sp, dp, 8, 0) if proto in (6, 17) else b"\x08\0\0\0") + \
            bytes(20)
        if src.version != dst.version:
            continue
        if src.version == 4:
            pkts.append(ip4(src, dst, proto, l4))
        else:
            pkts.append(struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64,
                                    src.packed, dst.packed) + l4)
    # twins: a packet that matches an SA, then, right after it each time, copies that
    # differ from it in one field the flow cache keys on
    def udp_like(src, dst, proto, sport, dport) -> bytes:
        l4 = struct.pack("!HHHH", sport, dport, 8, 0) + bytes(20)
        if src.version == 4:
            return ip4(src, dst, proto, l4)
        return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, src.packed,
                           dst.packed) + l4

    def out(net):           # its network address with the bit just inside the prefix flipped
        a = net.network_address
        return a if net.prefixlen == 0 else \
            ipaddress.ip_address(int(a) ^ (1 << (a.max_prefixlen - net.prefixlen)))

    for cfg in sas[:-1]:
        src, dst = cfg.sel.src.network_address, cfg.sel.dst.network_address
        proto, sp, dp = cfg.sel.proto or 17, cfg.sel.sport or 7, cfg.sel.dport or 9
        if proto not in (6, 17):
            continue
        for twin in ((src, dst, proto, sp + 1, dp), (src, dst, proto, sp, dp + 1),
                     (src, dst, 6 + 17 - proto, sp, dp), (out(cfg.sel.src), dst, proto, sp, dp),
                     (src, out(cfg.sel.dst), proto, sp, dp)):
            pkts += [udp_like(src, dst, proto, sp, dp), udp_like(*twin)]
    pkts += pkts[:500] + pkts[-200:]                # flows seen again: flow cache hits
    for catch_all in (False, True):                 # the last SA has no selector
        eng = Engine()
        for cfg in sas if catch_all else sas[:-1]:
            eng.install(cfg, "out")
        s = eng.sad
        first = PacketBatch.from_packets(pkts)
        n = first.count
        walk = np.full(n, -1, np.int64)
        _walk_selectors()(first.buf, first.off, first.length, n, s.rec, s.addr, s.spd, walk)
        matched = walk >= 0
        assert matched.all() if catch_all else 500 < matched.sum() < n
        if catch_all:                               # handles are install order here
            assert (walk == len(sas) - 1).sum() > 100
        for _ in range(2):                          # the engine, its cache cold then warm
            ref = PacketBatch.from_packets(pkts)
            eng.encrypt(ref)
            assert (ref.drop[:n] == np.where(matched, 0, Drop.NO_POLICY)).all()
            assert (ref.sa[:n][matched] == walk[matched]).all()
        pol_i, pol_a, keys, slots = compile_policy(s.rec, s.addr, s.spd)
        assert len(slots) > 0                       # 23+ policies: the flow cache is on
        # a fresh cache, the same one warm, and one of a single set: every flow evicts the
        # one before last, and a twin meets its original there (a key compare left out
        # would answer it from the original)
        tiny = (np.zeros((2, keys.shape[1]), np.uint64), np.full(2, FLOW_EMPTY, np.int32))
        for cache in ((keys, slots), (keys, slots), tiny):
            got = PacketBatch.from_packets(pkts)
            dest = np.zeros(got.count, np.int32)
            classify_encrypt(got.buf, got.off, got.length, got.drop, got.sa, got.count,
                             s.rec, pol_i, pol_a, *cache, np.zeros(s.max_sas, np.int32),
                             np.zeros(N_LOGICAL, np.int32), dest)
            assert (got.drop[:n] == np.where(matched, 0, Drop.NO_POLICY)).all()
            assert (got.sa[:n][matched] == walk[matched]).all()
        assert (slots != FLOW_EMPTY).sum() > 1000 and (tiny[1] != FLOW_EMPTY).all()


def test_cli_rejects_a_bad_worker_count(world):
    d = world["dir"]
    for bad in ("0", "x", "65"):
        p = run_spu("decrypt", "--sa", d / "sa.conf", d / "esp.pcap", d / "x.pcap",
                    "--workers", bad)
        assert p.returncode == 2 and "worker count" in p.stderr
    for bad in ("0", "-1", "x", "inf"):
        p = run_spu("decrypt", "--sa", d / "sa.conf", d / "esp.pcap", d / "x.pcap",
                    "--workers", "2", "--host-weight", bad)
        assert p.returncode == 2 and "bad host weight" in p.stderr


def test_cli_host_weight_and_dedicated_dispatcher_keep_the_output(world):
    """The SPU layout changes who owns what, never the packets written."""
    d = world["dir"]
    ref = None
    for extra, logical0 in ((["--host-weight", "3"], 192),         # 256 * 3 / (3 + 1)
                            (["--dedicated-dispatcher"], 128)):
        out = d / f"lay{logical0}.pcap"
        p = run_spu("decrypt", "--sa", d / "sa.conf", d / "esp.pcap", out, "--stats-json",
                    d / f"lay{logical0}.json", "--workers", "2", *extra)
        assert p.returncode == 0, p.stderr
        spus = json.loads((d / f"lay{logical0}.json").read_text())["spus"]
        assert [s["logical"] for s in spus] == [logical0, N_LOGICAL - logical0]
        assert [s["hosted"] for s in spus] == [extra[0] == "--host-weight", False]
        ref = ref or out.read_bytes()
        assert out.read_bytes() == ref


# -- load-aware balancing (engine/spu_balance.py) ----------------------------------------------
def test_choose_move_narrows_the_gap_and_leaves_balance_alone():
    owner = np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int32)
    load = np.array([100, 100, 100, 100, 0, 0, 0, 0], np.float64)
    # SPU 0 (hosted: its time includes dispatching) busy all of 1 s, SPU 1 half of it
    move = choose_move({0: 1.0, 1: 0.5}, load, owner, 1.0, hosted=0)
    assert move is not None and move[1:] == (0, 1) and owner[move[0]] == 0
    assert load[move[0]] > 0
    assert choose_move({0: 0.97, 1: 0.93}, load, owner, 1.0, hosted=0) is None   # balanced
    # the only loaded logical SPU carries far more than the gap: moving it would be worse
    fat = np.array([1000, 100, 0, 0, 0, 0, 0, 0], np.float64)
    assert choose_move({0: 1.0, 1: 0.8}, fat, owner, 1.0, hosted=0) is None
    assert choose_move({0: 1.0}, load, owner, 1.0) is None                       # one SPU
    loaded0 = [lg for lg in range(8) if owner[lg] == 0 and load[lg] > 0]
    assert choose_move({0: 1.0, 1: 0.5}, load, owner, 1.0, 0, held=loaded0) is None


def test_balancing_moves_load_off_an_overloaded_hosted_spu_keeping_exact_state():
    """The dispatcher's SPU given 3 times a worker's share: balancing moves logical SPUs to
    the worker mid-stream, and decrypt output and counters stay those of one engine
    (replays across the moves are still caught: the windows moved exactly)."""
    sa_text, _, make = sa_world()
    plain = make(12000)
    esp, _, _ = engine_run(sa_text, "encrypt", plain)
    cap = esp[:6000] + esp[5900:5990] + esp[6000:]
    ref, ref_drops, ref_stats = engine_run(sa_text, "decrypt", cap)
    with SpuCluster(2, capacity=256, host_spu=True, host_weight=3.0, balance=0.0) as cl:
        hs = [cl.install(cfg, "in") for cfg in parse_sa_text(sa_text)]
        before = {h: cl.spu_of(h) for h in hs}
        out, out_drops = [], []
        for b in cl.stream("decrypt", filler(cap)):
            out += b.packets()
            out_drops += b.drop[:b.count].tolist()
        stats = cl.stats()
        moves = [m for m in cl.moves if m[0] == "balance"]
        to = [m[1] for m in moves]                                # off the hosted SPU
        assert to and to[0] == 1 and to.count(1) > to.count(0)
        assert any(cl.spu_of(h) == 1 and before[h] == 0 for h in hs)
    assert out_drops == ref_drops and out_drops.count(Drop.REPLAY) >= 90
    assert [p for p, d in zip(out, out_drops) if not d] == \
        [p for p, d in zip(ref, ref_drops) if not d]
    assert {k: stats[k] for k in CONTRACT_KEYS} == ref_stats and stats["lost"] == 0


def test_benchmark_tunnels_past_256():
    """engine.spu_bench's tunnels and packets for more than 256 tunnels: distinct inner
    networks, every packet matching its own tunnel; out of range is a ValueError."""
    from engine.spu_bench import MAX_TUNNELS, udp_packets
    sas = tunnels(300, 2)
    assert len({c.sel.dst for c in sas}) == 300
    eng = Engine(max_sas=512)
    handles = [eng.install(c, "out") for c in sas]
    b = PacketBatch.from_packets(udp_packets(200, 600, 300))
    eng.encrypt(b)
    assert not b.drop[:600].any()
    assert b.sa[:600].tolist() == [handles[i % 300] for i in range(600)]
    for bad in (0, MAX_TUNNELS + 1):
        with pytest.raises(ValueError, match="tunnels must be"):
            tunnels(bad, 2)
