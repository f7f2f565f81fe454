"""TUN offloads (engine/_tun_offload.pyx, Tun.open(offload=True)): TCP segmentation of what
the kernel reads out of a TUN with TSO on, coalescing (GRO) of what we write in.

Oracles that are nobody's code here:
- the kernel: a TCP connection between two namespaces whose only path is two offload
  TUNs relayed by this process (read -> split -> batch -> coalesce -> write) must complete
  with the right SHA-256 (the receiving kernel checks every checksum and sequence number);
- scapy: every super-segment the kernel handed over is re-segmented by a reference built
  with scapy (header fields set as Linux's software GSO does, checksums by scapy) and must
  match ours byte for byte.
Hostile vnet headers are fed through tso_feed (the same code path as a TUN read).
"""
from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
import threading

import netns_harness as nh
import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from engine import _netio, _tun_offload
from engine.batch import PacketBatch
from engine.netio import Tun

MTU = 1400
VNET = struct.Struct("<BBHHHH")     # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 1, 0, 1, 4


pair = nh.pair_fixture("tof")


def _stats():
    return np.zeros(_netio.STATS_SIZE, np.uint64)


# ---------------------------------------------------------------------------------------
# reference segmentation (scapy) and packet builders
# ---------------------------------------------------------------------------------------
def _ref_segments(raw: bytes) -> list[bytes]:
    """What Linux's software GSO sends for a vnet header + TCP super-segment, built with
    scapy: IPv4 ID +1 per segment, seq advanced, CWR on the first only, FIN/PSH on the last
    only, lengths and checksums recomputed by scapy."""
    _flags, gso_type, _hl, mss, _cs, _co = VNET.unpack_from(raw)
    pkt = raw[VNET.size:]
    ip = IP(pkt) if gso_type & 0x7F == GSO_TCPV4 else IPv6(pkt)
    tcp = ip[TCP]
    data = bytes(tcp.payload)
    n = max(1, -(-len(data) // mss))
    out = []
    for k in range(n):
        seg = ip.copy()
        t = seg[TCP]
        t.remove_payload()
        t.add_payload(Raw(data[k * mss:(k + 1) * mss]))
        t.seq = (tcp.seq + k * mss) & 0xFFFFFFFF
        fl = int(tcp.flags)
        if k > 0:
            fl &= ~0x80
        if k < n - 1:
            fl &= ~0x09
        t.flags = fl
        del t.chksum
        if isinstance(seg, IP):
            seg.id = (ip.id + k) & 0xFFFF
            del seg.len
            del seg.chksum
        else:
            del seg.plen
        out.append(bytes(seg))
    return out


def _vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0) -> bytes:
    return VNET.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def _partial(pkt) -> bytes:
    """pkt (scapy, TCP) as the kernel hands a CHECKSUM_PARTIAL packet over: the TCP
    checksum field holds the folded pseudo-header sum, not the full checksum."""
    raw = bytearray(bytes(pkt))
    v6 = isinstance(pkt, IPv6)
    l4 = 40 if v6 else (raw[0] & 0x0F) * 4
    tl = len(raw) - l4
    if v6:
        words = raw[8:40] + bytes([0, 0, 0, 6]) + tl.to_bytes(4, "big")[2:]
    else:
        words = raw[12:20] + bytes([0, 6]) + tl.to_bytes(2, "big")
    s = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    raw[l4 + 16:l4 + 18] = s.to_bytes(2, "big")
    return bytes(raw)


def _super4(payload: int, mss: int, flags="PA", opts=True, seq=1000, ipid=7) -> bytes:
    tcp_opts = [("NOP", None), ("NOP", None), ("Timestamp", (123, 456))] if opts else []
    p = (IP(src="10.1.0.1", dst="10.2.0.1", id=ipid, flags="DF", tos=0x10)
         / TCP(sport=40000, dport=5201, seq=seq, ack=99, flags=flags, window=501,
               options=tcp_opts) / Raw(os.urandom(payload)))
    raw = _partial(p)
    l4 = 20
    hl = l4 + (raw[l4 + 12] >> 4) * 4
    return _vnet(NEEDS_CSUM, GSO_TCPV4, hl, mss, l4, 16) + raw


def _super6(payload: int, mss: int, flags="A") -> bytes:
    p = (IPv6(src="fd00:1::1", dst="fd00:2::1", tc=0x20, fl=0x12345)
         / TCP(sport=40001, dport=5201, seq=0xFFFFFF00, ack=5, flags=flags, window=77)
         / Raw(os.urandom(payload)))
    raw = _partial(p)
    return _vnet(NEEDS_CSUM, GSO_TCPV6, 60, mss, 40, 16) + raw


def _feed(raw: bytes, batch=None, max_len=MTU, state=None):
    batch = PacketBatch(256) if batch is None else batch
    st = _stats()
    state = _tun_offload.TsoState() if state is None else state
    n = _tun_offload.tso_feed(raw, batch, st, state, max_len)
    return n, batch, st, state


def _ocount(state, name):
    return int(state.offload_stats[_tun_offload.OFFLOAD_COUNTERS.index(name)])


# ---------------------------------------------------------------------------------------
# read side without a kernel: reference comparison, pending continuation, hostile headers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload,mss,flags", [(64000, 1348, "PA"), (5000, 1000, "FPA"),
                                               (1348, 1348, "A"), (2697, 1348, "CA"),
                                               (10, 536, "PA")])
def test_split_ipv4_matches_scapy_reference(payload, mss, flags):
    raw = _super4(payload, mss, flags)
    n, b, st, state = _feed(raw)
    ref = _ref_segments(raw)
    assert n == len(ref) == b.count
    assert b.packets() == ref
    assert _ocount(state, "rx_gso") == 1 and _ocount(state, "rx_gso_segs") == len(ref)
    assert int(st[0]) == len(ref)
    for seg in b.packets():
        assert len(seg) <= MTU
        q = IP(seg)
        del q.chksum, q[TCP].chksum
        assert bytes(IP(bytes(q))) == seg            # scapy agrees with both checksums


def test_split_ipv6_matches_scapy_reference():
    raw = _super6(20000, 1328)
    n, b, _, _ = _feed(raw)
    assert b.packets() == _ref_segments(raw)
    assert n == 16


def test_non_gso_checksum_completed():
    for pkt in (IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")
                / Raw(b"x" * 33),
                IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=3, dport=4) / Raw(b"hello")):
        raw = _partial(pkt)
        l4 = 40 if isinstance(pkt, IPv6) else 20
        n, b, _, state = _feed(_vnet(NEEDS_CSUM, GSO_NONE, 0, 0, l4, 16) + raw)
        assert n == 1 and b.packets() == [bytes(pkt)]
        assert _ocount(state, "rx_csum_completed") == 1
    udp = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=6) / Raw(b"abc")
    raw = bytearray(bytes(udp))
    full = raw[26:28]
    raw[26:28] = b"\0\0"
    s = sum(int.from_bytes(bytes(raw[i:i + 2]), "big") for i in (12, 14, 16, 18))
    s += 17 + 11
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    raw[26:28] = s.to_bytes(2, "big")
    n, b, _, _ = _feed(_vnet(NEEDS_CSUM, 0, 0, 0, 20, 6) + bytes(raw))
    assert b.packets()[0][26:28] == bytes(full)
    plain = bytes(IP(dst="10.0.0.2") / UDP() / Raw(b"q"))
    n, b, _, _ = _feed(_vnet() + plain)
    assert b.packets() == [plain]


def test_pending_super_segment_continues_in_next_batch():
    raw = _super4(30000, 1000)
    ref = _ref_segments(raw)
    state = _tun_offload.TsoState()
    got = []
    b = PacketBatch(4)
    n, b, st, state = _feed(raw, b, state=state)
    assert n == 4 and state.pending
    got += b.packets()
    while state.pending:
        b.clear()
        _tun_offload.tso_feed(b"", b, st, state, MTU)
        got += b.packets()
    assert got == ref
    # a byte budget that is the limit, not the capacity
    b = PacketBatch(64, data_bytes=3 * 1100)
    _, b, _, state = _feed(raw, b)
    assert state.pending and 1 <= b.count < 64
    assert int(b.slot_end[b.count - 1]) <= b.buf.size


def _doff_beyond(r: bytes) -> bytes:
    """60 bytes of IP packet (total length fixed) whose TCP data offset claims 60 bytes."""
    b = bytearray(r[:10 + 60])
    b[12:14] = struct.pack(">H", 60)
    b[10 + 20 + 12] = 0xF0
    return bytes(b)


HOSTILE = [
    ("gso_size 0", lambda r: r[:4] + b"\0\0" + r[6:], "rx_vnet_bad"),
    ("csum_start beyond", lambda r: r[:6] + struct.pack("<H", 60000) + r[8:], "rx_vnet_bad"),
    ("csum_offset not TCP", lambda r: r[:8] + struct.pack("<H", 6) + r[10:], "rx_vnet_bad"),
    ("gso_type UDP", lambda r: r[:1] + b"\x03" + r[2:], "rx_vnet_bad"),
    ("gso_type unknown", lambda r: r[:1] + b"\x7e" + r[2:], "rx_vnet_bad"),
    ("TCPV6 on IPv4", lambda r: r[:1] + b"\x04" + r[2:], "rx_vnet_bad"),
    ("ip len lies long", lambda r: r[:12] + struct.pack(">H", len(r)) + r[14:], "rx_gso_bad"),
    ("ip len lies short", lambda r: r[:12] + struct.pack(">H", 100) + r[14:], "rx_gso_bad"),
    ("truncated", lambda r: r[:10 + 30], "rx_vnet_bad"),
    ("doff beyond", lambda r: _doff_beyond(r), "rx_gso_bad"),
    ("gso_size > mtu", lambda r: r[:4] + struct.pack("<H", 9000) + r[6:], "rx_gso_bad"),
    ("not TCP", lambda r: r[:10 + 9] + b"\x11" + r[10 + 10:], "rx_gso_bad"),
    ("fragment", lambda r: r[:10 + 6] + b"\x20\x00" + r[10 + 8:], "rx_gso_bad"),
    ("ihl lies", lambda r: r[:10] + b"\x4f" + r[11:], "rx_gso_bad"),
]


@pytest.mark.parametrize("name,mangle,counter", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_vnet_headers_are_counted_drops(name, mangle, counter):
    raw = mangle(_super4(8000, 1000))
    b = PacketBatch(64)
    before = b.buf.copy()
    n, b, _, state = _feed(raw, b)
    assert n == 0 and b.count == 0 and b.used == 0 and not state.pending
    assert np.array_equal(b.buf, before)
    assert _ocount(state, counter) == 1


def test_hostile_non_gso_and_short_reads():
    pkt = bytes(IP(dst="10.0.0.2") / TCP() / Raw(b"x" * 10))
    for vh in (_vnet(NEEDS_CSUM, 0, 0, 0, len(pkt), 16),      # csum_start at the end
               _vnet(NEEDS_CSUM, 0, 0, 0, 20, len(pkt) - 21),  # field past the end
               _vnet(NEEDS_CSUM, 0, 0, 0, 65535, 65535)):
        n, _, _, state = _feed(vh + pkt)
        assert n == 0 and _ocount(state, "rx_vnet_bad") == 1
    for short in (b"", b"\x01", _vnet()):
        n, _b, _st, _state = _feed(short)
        assert n == 0
    n, _b, st, _ = _feed(_vnet() + b"\x45" * 1500)                # longer than the MTU
    assert n == 0 and int(st[_netio.COUNTERS.index("rx_truncated")]) == 1


def test_fuzz_never_writes_outside_slots():
    rng = np.random.default_rng(7)
    base = _super4(6000, 700)
    state = _tun_offload.TsoState()
    st = _stats()
    for it in range(3000):
        raw = bytearray(base[:int(rng.integers(0, len(base) + 1))])
        for _ in range(int(rng.integers(1, 6))):
            if raw:
                raw[int(rng.integers(0, min(len(raw), 80)))] = int(rng.integers(0, 256))
        b = PacketBatch(int(rng.integers(1, 40)), data_bytes=int(rng.integers(1, 40000)))
        guard = b.buf.size
        _tun_offload.tso_feed(bytes(raw), b, st, state, int(rng.integers(68, 2000)))
        while state.pending:
            b.clear()
            _tun_offload.tso_feed(b"", b, st, state, MTU)
        for i in range(b.count):
            assert 0 <= b.slot_start[i] < b.off[i] <= b.off[i] + b.length[i] <= b.slot_end[i]
            assert b.slot_end[i] <= guard


# ---------------------------------------------------------------------------------------
# write side without a kernel: what gets coalesced
# ---------------------------------------------------------------------------------------
def _segs(n, mss=1000, seq=1, flags_last="A", **kw):
    out = []
    for k in range(n):
        fl = flags_last if k == n - 1 else "A"
        out.append(bytes(IP(src="10.1.0.1", dst="10.2.0.1", id=k, flags="DF", **kw)
                         / TCP(sport=1, dport=2, seq=seq + k * mss, ack=9, flags=fl,
                               options=[("Timestamp", (1, 2))])
                         / Raw(bytes([k]) * mss)))
    return out


def test_gro_plan_runs():
    b = PacketBatch.from_packets(_segs(5, flags_last="PA"))
    assert _tun_offload.gro_plan(b) == [[0, 1, 2, 3, 4]]
    gap = _segs(3) + _segs(2, seq=1 + 4000)
    assert _tun_offload.gro_plan(PacketBatch.from_packets(gap)) == [[0, 1, 2], [3, 4]]
    psh_mid = _segs(2, flags_last="PA") + _segs(2, seq=2001)
    assert _tun_offload.gro_plan(PacketBatch.from_packets(psh_mid)) == [[0, 1], [2, 3]]
    bad = _segs(3)
    x = bytearray(bad[1])
    x[-1] ^= 1                                   # TCP checksum now wrong: never coalesced
    bad[1] = bytes(x)
    assert _tun_offload.gro_plan(PacketBatch.from_packets(bad)) == [[0], [1], [2]]
    short_mid = _segs(1) + [bytes(IP(src="10.1.0.1", dst="10.2.0.1", flags="DF")
                                  / TCP(sport=1, dport=2, seq=1001, ack=9, flags="A",
                                        options=[("Timestamp", (1, 2))]) / Raw(b"s" * 10))] \
        + _segs(1, seq=1011)
    assert _tun_offload.gro_plan(PacketBatch.from_packets(short_mid)) == [[0, 1], [2]]
    other_flow = _segs(2) + [bytes(IP(src="10.1.0.9", dst="10.2.0.1", flags="DF")
                                   / TCP(sport=1, dport=2, seq=2001, ack=9, flags="A",
                                         options=[("Timestamp", (1, 2))]) / Raw(b"o" * 1000))]
    assert _tun_offload.gro_plan(PacketBatch.from_packets(other_flow)) == [[0, 1], [2]]
    udp = [bytes(IP(dst="10.2.0.1") / UDP() / Raw(b"u" * 100))] * 2
    assert _tun_offload.gro_plan(PacketBatch.from_packets(udp + _segs(2))) == \
        [[0], [1], [2, 3]]
    big = _segs(70, mss=1000)                    # 64-segment bound
    assert [len(r) for r in _tun_offload.gro_plan(PacketBatch.from_packets(big))] == [64, 6]
    jumbo = _segs(3, mss=30000)                  # 65535-byte bound
    assert [len(r) for r in _tun_offload.gro_plan(PacketBatch.from_packets(jumbo))] == [2, 1]
    s4 = _segs(3)
    b = PacketBatch.from_packets(s4[:1] + udp[:1] + s4[1:])
    b.drop[1] = 3                                # a dropped packet in between is skipped
    assert _tun_offload.gro_plan(b) == [[0, 2, 3]]
    b = PacketBatch.from_packets(_segs(4))
    b.drop[1] = 3                                # a dropped segment is a gap in seq
    assert _tun_offload.gro_plan(b) == [[0], [2, 3]]


# ---------------------------------------------------------------------------------------
# with the kernel: a TCP transfer through two offload TUNs relayed by this process
# ---------------------------------------------------------------------------------------
class Relay(threading.Thread):
    """tun_a <-> tun_b: read a batch (TSO split), write it to the other side (GRO). With
    capture, reads on tun_a go through os.read + tso_feed and the raw super-segments are
    kept for the reference comparison."""

    def __init__(self, tun_a: Tun, tun_b: Tun, capture: bool):
        super().__init__(daemon=True)
        self.a, self.b, self.capture = tun_a, tun_b, capture
        self.stop = threading.Event()
        self.raw: list[bytes] = []
        self.split: list[list[bytes]] = []
        self.max_seg = 0
        self.error: BaseException | None = None

    def _read(self, tun: Tun, batch: PacketBatch) -> None:
        if not (self.capture and tun is self.a):
            tun.read(batch)
            return
        while batch.count < batch.capacity - 64:
            if tun.pending:
                tun.read(batch)
                continue
            try:
                raw = os.read(tun.fd, 70000)
            except BlockingIOError:
                return
            first = batch.count
            _tun_offload.tso_feed(raw, batch, tun.stats, tun.tso, tun.mtu)
            if raw[1] != 0 and len(self.raw) < 200 and not tun.pending:
                self.raw.append(raw)
                self.split.append([batch.packet(i) for i in range(first, batch.count)])

    def run(self) -> None:
        batch = PacketBatch(256)
        try:
            while not self.stop.is_set():
                r, _, _ = select.select([self.a.fd, self.b.fd], [], [], 0.1)
                for src, dst in ((self.a, self.b), (self.b, self.a)):
                    if src.fd in r or src.pending:
                        batch.clear()
                        self._read(src, batch)
                        if batch.count:
                            self.max_seg = max(self.max_seg,
                                               int(batch.length[:batch.count].max()))
                            dst.write(batch)
        except (OSError, ValueError) as e:      # reported by the test
            self.error = e


def _transfer(ns_src, ns_dst, dst_ip, nbytes, family=socket.AF_INET):
    with ns_dst.enter():
        srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((dst_ip, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    result = {}

    def sink():
        c, _ = srv.accept()
        h, got = hashlib.sha256(), 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            got += len(d)
        result["digest"], result["got"] = h.hexdigest(), got
        c.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    data = os.urandom(nbytes)
    with ns_src.enter():
        c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(60)
    c.connect((dst_ip, port))
    c.sendall(data)
    c.close()
    t.join(60)
    srv.close()
    return result.get("got"), result.get("digest") == hashlib.sha256(data).hexdigest()


@pytest.fixture
def tuns(pair):
    made = []

    def make(tag: str, offload=True):
        with pair.a.enter():
            ta = Tun.open(f"to{tag}a", mtu=MTU, offload=offload)
            ta.configure(["10.77.0.1/24", "fd77:0::1/64"], ["10.77.1.0/24", "fd77:1::/64"])
        with pair.b.enter():
            tb = Tun.open(f"to{tag}b", mtu=MTU, offload=offload)
            tb.configure(["10.77.1.1/24", "fd77:1::1/64"], ["10.77.0.0/24", "fd77:0::/64"])
        made.extend([ta, tb])
        return ta, tb

    yield make
    for t in made:
        t.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_kernel_tcp_through_offload_tuns(tuns, pair, family):
    ta, tb = tuns("k" + ("4" if family == socket.AF_INET else "6"))
    relay = Relay(ta, tb, capture=True)
    relay.start()
    try:
        dst = "10.77.1.1" if family == socket.AF_INET else "fd77:1::1"
        got, ok = _transfer(pair.a, pair.b, dst, 20 << 20, family)
    finally:
        relay.stop.set()
        relay.join(5)
    assert relay.error is None, relay.error
    assert got == 20 << 20 and ok
    # the kernel did hand over super-segments, each split exactly as the reference does
    a_off, b_off = ta.counters()["offload"], tb.counters()["offload"]
    assert a_off["rx_gso"] > 0 and a_off["rx_gso_segs"] > a_off["rx_gso"]
    assert relay.raw, "no super-segment was captured"
    for raw, segs in zip(relay.raw, relay.split):
        assert segs == _ref_segments(raw)
    assert relay.max_seg <= MTU
    # and what we wrote into tun_b was coalesced and accepted (the digest above)
    assert b_off["tx_gro"] > 0 and b_off["tx_gro_segs"] > 2 * b_off["tx_gro"]
    assert b_off["tx_gro_fallback"] == 0
    assert tb.counters()["tx_errors"] == 0
    assert a_off["rx_vnet_bad"] == a_off["rx_gso_bad"] == 0


def test_offload_tun_read_path_and_no_gro(tuns, pair):
    """Tun.read (tun_read_offload) on both sides; GRO off on one side: still correct."""
    ta, tb = tuns("r")
    tb.gro = False
    relay = Relay(ta, tb, capture=False)
    relay.start()
    try:
        got, ok = _transfer(pair.a, pair.b, "10.77.1.1", 8 << 20)
    finally:
        relay.stop.set()
        relay.join(5)
    assert relay.error is None, relay.error
    assert got == 8 << 20 and ok
    assert ta.counters()["offload"]["rx_gso"] > 0
    assert tb.counters()["offload"]["tx_gro"] == 0
    assert relay.max_seg <= MTU


def test_write_offload_malformed_rows_counted(tuns):
    ta, _ = tuns("m")
    b = PacketBatch.from_packets(_segs(3))
    b.off[1] = b.buf.size + 5
    sent = ta.write(b)
    assert ta.counters()["tx_malformed"] == 1
    assert sent == 2


@pytest.fixture
def third(pair):
    """ns c behind ns b (veth 10.78.0.1 in b <-> 10.78.0.2 in c), b forwarding."""
    c = nh.Netns(f"{pair.b.name}-c")
    vb, vc = f"{pair.vb}f", f"{pair.vb}c"
    nh.sh("ip", "netns", "add", c.name)
    try:
        nh.sh("ip", "link", "add", vb, "netns", pair.b.name, "type", "veth", "peer", "name",
              vc, "netns", c.name)
        pair.b.ip("addr", "add", "10.78.0.1/24", "dev", vb)
        pair.b.ip("link", "set", vb, "up")
        c.ip("addr", "add", "10.78.0.2/24", "dev", vc)
        c.ip("link", "set", vc, "up")
        c.ip("link", "set", "lo", "up")
        c.ip("route", "add", "10.77.0.0/24", "via", "10.78.0.1")
        nh.sh(*pair.b.exec("sysctl", "-qw", "net.ipv4.ip_forward=1"))
        yield c
    finally:
        nh.sh("ip", "netns", "del", c.name, check=False)


def test_coalesced_packets_forwarded_by_the_kernel(tuns, pair, third):
    """What GRO wrote into tun_b is routed on (not delivered locally): the kernel
    re-segments or passes it to the veth as GSO, and the host behind gets every byte."""
    ta, tb = tuns("f")
    pair.a.ip("route", "add", "10.78.0.0/24", "dev", ta.name)
    relay = Relay(ta, tb, capture=False)
    relay.start()
    try:
        got, ok = _transfer(pair.a, third, "10.78.0.2", 8 << 20)
    finally:
        relay.stop.set()
        relay.join(5)
    assert relay.error is None, relay.error
    assert got == 8 << 20 and ok
    assert tb.counters()["offload"]["tx_gro"] > 0
