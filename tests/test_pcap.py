"""engine.pcap: streaming pcap/pcapng into and out of PacketBatch."""
from __future__ import annotations

import os
import struct
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine.batch import PacketBatch
from engine.drops import Drop
from engine.pcap import (LINKTYPE_ETHERNET, LINKTYPE_RAW, MAX_CAPLEN, PcapError, PcapFormat,
                         PcapReader, PcapWriter, read_pcap, write_pcap)

DST = bytes.fromhex("020000000001")
SRC = bytes.fromhex("020000000002")
T0 = 1_700_000_000 * 10**9   # a realistic epoch timestamp, ns
MIN_CHUNK = 16 + MAX_CAPLEN  # the smallest chunk_size the reader accepts


# -- helpers ------------------------------------------------------------------------------

def ipv4(n: int, payload_len: int = 20) -> bytes:
    """A small IPv4-looking packet whose bytes identify it."""
    return bytes([0x45, 0]) + struct.pack(">HI", 20 + payload_len, n) + bytes(
        (n + j) & 0xFF for j in range(14 + payload_len))


def ipv6(n: int) -> bytes:
    return bytes([0x60, 0, 0, 0]) + struct.pack(">I", n) + bytes(32)


def ether(pkt: bytes, etype: int | None = None, tags: tuple = ()) -> bytes:
    if etype is None:
        etype = 0x86DD if pkt[0] >> 4 == 6 else 0x0800
    hdr = DST + SRC
    for tpid, tci in tags:
        hdr += struct.pack(">HH", tpid, tci)
    return hdr + struct.pack(">H", etype) + pkt


def read_all(path, capacity=64, **kw):
    """Every packet via PcapReader: list of (ts, l2 header, packet, drop)."""
    out = []
    batch = PacketBatch(capacity, **kw)
    with PcapReader(path) as r:
        while True:
            batch.clear()
            if not r.fill(batch):
                break
            out += [(int(batch.ts_ns[i]), batch.l2[i, :batch.l2_len[i]].tobytes(),
                     batch.packet(i), int(batch.drop[i])) for i in range(batch.count)]
    return out


def copy_file(src, dst, capacity=64) -> PcapReader:
    """Read src and write it back through PcapWriter, batch by batch."""
    batch = PacketBatch(capacity)
    with PcapReader(src) as r, PcapWriter(dst, r) as w:
        while True:
            batch.clear()
            if not r.fill(batch):
                break
            w.write(batch)
    return r


def timestamps(n):
    return [T0 + i * 1_000_000 + i * 1000 for i in range(n)]   # whole microseconds


FORMATS = [
    dict(),
    dict(big_endian=True),
    dict(nanosecond=True),
    dict(big_endian=True, nanosecond=True),
    dict(pcapng=True),
    dict(pcapng=True, big_endian=True),
    dict(pcapng=True, tsresol=9),
    dict(pcapng=True, tsresol=0x80 | 30),   # binary 2^-30 s: finer than 1 ns
]


# -- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: ",".join(f) or "pcap-le-us")
def test_raw_round_trip(tmp_path, fmt):
    pkts = [ipv4(i, i % 40) if i % 3 else ipv6(i) for i in range(300)]
    ts = timestamps(len(pkts))
    if fmt.get("nanosecond") or fmt.get("tsresol", 6) != 6:
        ts = [t + 123 for t in ts]   # keep sub-microsecond digits
    write_pcap(tmp_path / "in", pkts, LINKTYPE_RAW, timestamps=ts, **fmt)

    got = read_all(tmp_path / "in", capacity=37)
    assert [g[2] for g in got] == pkts
    assert [g[0] for g in got] == ts
    assert all(g[1] == b"" and g[3] == 0 for g in got)

    r = copy_file(tmp_path / "in", tmp_path / "out")
    assert r.format.pcapng == fmt.get("pcapng", False)
    assert read_pcap(tmp_path / "out") == list(zip(ts, pkts))
    with PcapReader(tmp_path / "out") as r2:
        assert r2.format == r.format   # byte order, resolution, link type
    if not fmt.get("pcapng"):   # classic pcap comes back byte for byte
        assert (tmp_path / "out").read_bytes() == (tmp_path / "in").read_bytes()


def test_ethernet_round_trip_keeps_headers(tmp_path):
    pkts = [ipv4(i) if i % 2 else ipv6(i) for i in range(50)]
    frames = [ether(p) for p in pkts]
    write_pcap(tmp_path / "in", frames, LINKTYPE_ETHERNET)
    got = read_all(tmp_path / "in")
    assert [g[2] for g in got] == pkts
    assert [g[1] for g in got] == [f[:14] for f in frames]
    copy_file(tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "in").read_bytes()


def test_ethernet_trailer_is_passed_through(tmp_path):
    """Padding of a minimum-size frame stays: the engine trims by the IP total length."""
    frame = ether(ipv4(1, 0)) + bytes(6)
    write_pcap(tmp_path / "in", [frame], LINKTYPE_ETHERNET)
    [(_, l2, pkt, drop)] = read_all(tmp_path / "in")
    assert pkt == ipv4(1, 0) + bytes(6) and drop == 0


# -- VLANs, EtherType rewriting, non-IP frames ---------------------------------------------

def test_vlan_tags_are_kept_in_l2(tmp_path):
    frames = [
        ether(ipv4(1), tags=((0x8100, 100),)),
        ether(ipv6(2), tags=((0x88A8, 10), (0x8100, 20))),
        ether(ipv4(3), tags=((0x9100, 1), (0x8100, 2), (0x8100, 3), (0x8100, 4))),
    ]
    write_pcap(tmp_path / "in", frames, LINKTYPE_ETHERNET)
    got = read_all(tmp_path / "in")
    assert [g[2] for g in got] == [ipv4(1), ipv6(2), ipv4(3)]
    assert [len(g[1]) for g in got] == [18, 22, 30]
    assert [g[1] for g in got] == [f[:len(g[1])] for f, g in zip(frames, got)]
    assert all(g[3] == 0 for g in got)
    copy_file(tmp_path / "in", tmp_path / "out")
    assert [f for _, f in read_pcap(tmp_path / "out")] == frames


def test_writer_sets_ethertype_from_ip_version(tmp_path):
    """The engine may turn an IPv4 packet into IPv6 (tunnel) or back: the EtherType follows."""
    write_pcap(tmp_path / "in", [ether(ipv4(1), tags=((0x8100, 7),)), ether(ipv6(2))],
               LINKTYPE_ETHERNET)
    batch = PacketBatch(8)
    with PcapReader(tmp_path / "in") as r:
        r.fill(batch)
        out = PacketBatch(8)
        for i, pkt in enumerate((ipv6(10), ipv4(11))):   # swap versions, keep L2
            j = out.add(pkt, ts_ns=int(batch.ts_ns[i]))
            out.l2[j] = batch.l2[i]
            out.l2_len[j] = batch.l2_len[i]
        out.add(ipv4(12), ts_ns=5)   # made by the engine: no L2 header
        with PcapWriter(tmp_path / "out", r) as w:
            assert w.write(out) == 3
    frames = [f for _, f in read_pcap(tmp_path / "out")]
    assert frames[0] == ether(ipv6(10), tags=((0x8100, 7),))
    assert frames[1] == ether(ipv4(11))
    assert frames[2] == bytes(12) + b"\x08\x00" + ipv4(12)


def test_raw_output_drops_l2(tmp_path):
    batch = PacketBatch(4)
    i = batch.add(ipv4(1))
    batch.l2[i, :14] = np.frombuffer(ether(b"\x45")[:14], np.uint8)
    batch.l2_len[i] = 14
    with PcapWriter(tmp_path / "out", PcapFormat(linktype=LINKTYPE_RAW)) as w:
        w.write(batch)
    assert read_pcap(tmp_path / "out") == [(0, ipv4(1))]


def test_non_ip_frames_are_added_as_malformed(tmp_path):
    frames = [
        ether(ipv4(1)),
        ether(b"\x00\x01\x08\x00" + bytes(24), etype=0x0806),   # ARP
        DST + SRC[:4],                                          # shorter than a header
        ether(ipv4(2), etype=0x002E),                           # 802.3 length field
        DST + SRC + b"\x81\x00\x00",                            # ends inside a VLAN tag
        ether(ipv4(3), tags=((0x8100, 1),) * 5),                # more tags than L2_MAX holds
        ether(ipv6(4)),
    ]
    write_pcap(tmp_path / "in", frames, LINKTYPE_ETHERNET)
    got = read_all(tmp_path / "in")
    assert len(got) == len(frames)
    assert [g[3] for g in got] == [0] + [Drop.MALFORMED] * 5 + [0]
    assert got[0][2] == ipv4(1) and got[6][2] == ipv6(4)
    copy_file(tmp_path / "in", tmp_path / "out")   # the writer skips dropped packets
    assert [f for _, f in read_pcap(tmp_path / "out")] == [frames[0], frames[6]]


# -- damage -------------------------------------------------------------------------------

@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize("cut", [1, 5, 10, 16, 30])
def test_truncated_last_record(tmp_path, pcapng, cut):
    pkts = [ipv4(i) for i in range(10)]
    write_pcap(tmp_path / "full", pkts, LINKTYPE_RAW, pcapng=pcapng)
    data = (tmp_path / "full").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-cut])
    got = read_all(tmp_path / "cut", capacity=4)
    assert [g[2] for g in got[:9]] == pkts[:9]
    assert all(g[3] == 0 for g in got[:9])
    assert len(got) == 10 and got[9][3] == Drop.MALFORMED and got[9][2] == b""
    with PcapReader(tmp_path / "cut") as r:
        b = PacketBatch(64)
        assert r.fill(b) == 10 and r.truncated and r.truncated_at is not None
        assert r.fill(b) == 0
    with PcapReader(tmp_path / "full") as r:
        assert r.fill(PacketBatch(64)) == 10 and not r.truncated


def test_truncated_record_when_batch_is_full(tmp_path):
    """The MALFORMED remainder waits for the next batch if this one has no room."""
    write_pcap(tmp_path / "full", [ipv4(i) for i in range(4)], LINKTYPE_RAW)
    (tmp_path / "cut").write_bytes((tmp_path / "full").read_bytes()[:-3])
    b = PacketBatch(3)
    with PcapReader(tmp_path / "cut") as r:
        assert r.fill(b) == 3 and list(b.drop[:3]) == [0, 0, 0]
        b.clear()
        assert r.fill(b) == 1 and b.drop[0] == Drop.MALFORMED and r.eof
        b.clear()
        assert r.fill(b) == 0


@pytest.mark.parametrize("pcapng", [False, True])
def test_impossible_caplen_is_treated_as_truncation(tmp_path, pcapng):
    pkts = [ipv4(i) for i in range(3)]
    write_pcap(tmp_path / "in", pkts, LINKTYPE_RAW, pcapng=pcapng)
    data = bytearray((tmp_path / "in").read_bytes())
    last = len(data) - (len(pkts[2]) + (32 if pcapng else 16))
    caplen_at = last + (20 if pcapng else 8)
    data[caplen_at:caplen_at + 4] = struct.pack("<I", 10**6)
    data += bytes(100)   # trailing garbage after the damage is not read
    (tmp_path / "in").write_bytes(bytes(data))
    got = read_all(tmp_path / "in")
    assert [g[2] for g in got[:2]] == pkts[:2]
    assert len(got) == 3 and got[2][3] == Drop.MALFORMED


def test_header_only_file_is_empty(tmp_path):
    write_pcap(tmp_path / "in", [], LINKTYPE_ETHERNET)
    with PcapReader(tmp_path / "in") as r:
        assert r.fill(PacketBatch(4)) == 0 and not r.truncated
        assert r.linktype == LINKTYPE_ETHERNET


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"\xd4\xc3", b"hello world, not a capture",
                                     b"\xd4\xc3\xb2\xa1\x02\x00",
                                     b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c"])
def test_not_a_capture(tmp_path, content):
    (tmp_path / "x").write_bytes(content)
    with pytest.raises(PcapError) as e:
        PcapReader(tmp_path / "x")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(PcapError, match="nope"):
        PcapReader(tmp_path / "nope.pcap")


@pytest.mark.parametrize("pcapng", [False, True])
def test_unknown_linktype(tmp_path, pcapng):
    write_pcap(tmp_path / "x", [b"\0" * 20], linktype=113, pcapng=pcapng)   # Linux SLL
    with pytest.raises(PcapError, match="link type 113"):
        PcapReader(tmp_path / "x")


def test_unwritable_output(tmp_path):
    with pytest.raises(OSError):
        PcapWriter(tmp_path / "no" / "such" / "dir.pcap", PcapFormat())


def test_packet_larger_than_empty_batch(tmp_path):
    write_pcap(tmp_path / "in", [ipv4(1, 5000)], LINKTYPE_RAW)
    with PcapReader(tmp_path / "in") as r, pytest.raises(OverflowError):
        r.fill(PacketBatch(1, data_bytes=1000))


# -- hand-built pcapng --------------------------------------------------------------------

class NG:
    """A minimal pcapng builder (independent of engine.pcap)."""

    def __init__(self, be=False):
        self.e = ">" if be else "<"
        self.out = b""
        self.section()

    def block(self, btype, body):
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        self.out += struct.pack(self.e + "II", btype, n) + body + struct.pack(self.e + "I", n)

    def section(self, be=None):
        if be is not None:
            self.e = ">" if be else "<"
        self.block(0x0A0D0D0A, struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def idb(self, linktype, tsresol=None, tsoffset=None):
        opts = struct.pack(self.e + "HH", 2, 4) + b"eth0"    # if_name, ignored
        if tsresol is not None:
            opts += struct.pack(self.e + "HHB3x", 9, 1, tsresol)
        if tsoffset is not None:
            opts += struct.pack(self.e + "HHq", 14, 8, tsoffset)
        opts += struct.pack(self.e + "HH", 0, 0)
        self.block(1, struct.pack(self.e + "HHI", linktype, 0, 0) + opts)

    def epb(self, iface, ticks, data, options=b""):
        self.block(6, struct.pack(self.e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                  len(data), len(data)) + data + b"\0" * (-len(data) % 4)
                   + options)

    def spb(self, data):
        self.block(3, struct.pack(self.e + "I", len(data)) + data)

    def opb(self, iface, ticks, data):
        self.block(2, struct.pack(self.e + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                  len(data), len(data)) + data)


def test_handmade_pcapng_sections_interfaces_and_blocks(tmp_path):
    ng = NG()
    ng.idb(LINKTYPE_ETHERNET, tsresol=9)                     # ns ticks
    ng.idb(LINKTYPE_RAW, tsoffset=1000)                      # default us, +1000 s
    ng.block(4, b"\0" * 8)                                   # name resolution: skipped
    ng.epb(0, T0 + 7, ether(ipv4(1)), options=struct.pack("<HH4s", 1, 3, b"hi\0") + bytes(4))
    ng.epb(1, 5_000_001, ipv6(2))
    ng.block(0x0BAD, b"custom block")                        # unknown type: skipped
    ng.spb(ether(ipv4(3)))                                   # interface 0, no timestamp
    ng.opb(1, 42, ipv4(4))
    ng.block(5, b"\0" * 20)                                  # interface statistics
    ng.section(be=True)                                      # new section, other byte order
    ng.idb(LINKTYPE_RAW, tsresol=0x80 | 10)                  # 2^-10 s ticks
    ng.epb(0, 3 * 1024 + 512, ipv4(5))
    (tmp_path / "in").write_bytes(ng.out)

    got = read_all(tmp_path / "in", capacity=2)
    assert [g[2] for g in got] == [ipv4(1), ipv6(2), ipv4(3), ipv4(4), ipv4(5)]
    assert [g[0] for g in got] == [T0 + 7, 1005_000_001_000, 0, 1000_000_042_000,
                                   3_500_000_000]
    assert [len(g[1]) for g in got] == [14, 0, 14, 0, 0]
    assert all(g[3] == 0 for g in got)
    with PcapReader(tmp_path / "in") as r:
        assert r.format == PcapFormat(pcapng=True, big_endian=False,
                                      linktype=LINKTYPE_ETHERNET, tsresol=9, snaplen=0)
    # The simple cross-check parser agrees on every record.
    assert [t for t, _ in read_pcap(tmp_path / "in")] == [g[0] for g in got]

    # Written back as one Ethernet interface: raw-IP packets get zero-MAC headers.
    copy_file(tmp_path / "in", tmp_path / "out")
    frames = [f for _, f in read_pcap(tmp_path / "out")]
    assert frames[0] == ether(ipv4(1))
    assert frames[1] == bytes(12) + b"\x86\xdd" + ipv6(2)
    assert [t for t, _ in read_pcap(tmp_path / "out")] == [g[0] for g in got]


def test_pcapng_big_endian_first_section(tmp_path):
    ng = NG(be=True)
    ng.idb(LINKTYPE_RAW, tsresol=3)
    ng.epb(0, 1234, ipv4(1))
    (tmp_path / "in").write_bytes(ng.out)
    assert read_all(tmp_path / "in") == [(1_234_000_000, b"", ipv4(1), 0)]
    r = copy_file(tmp_path / "in", tmp_path / "out")
    assert r.format.big_endian and r.format.tsresol == 3
    assert (tmp_path / "out").read_bytes()[8:12] == bytes.fromhex("1a2b3c4d")
    assert read_all(tmp_path / "out") == [(1_234_000_000, b"", ipv4(1), 0)]


def test_pcapng_packet_on_unsupported_interface(tmp_path):
    ng = NG()
    ng.idb(LINKTYPE_RAW)
    ng.idb(113)
    ng.epb(0, 1, ipv4(1))
    ng.epb(1, 2, b"\0" * 20)
    (tmp_path / "in").write_bytes(ng.out)
    with PcapReader(tmp_path / "in") as r, pytest.raises(PcapError, match="113"):
        r.fill(PacketBatch(8))


def test_pcapng_packet_before_interface(tmp_path):
    ng = NG()
    ng.epb(0, 1, ipv4(1))
    (tmp_path / "in").write_bytes(ng.out)
    with pytest.raises(PcapError):
        PcapReader(tmp_path / "in")


def test_pcapng_block_larger_than_buffer_is_skipped(tmp_path):
    ng = NG()
    ng.idb(LINKTYPE_RAW)
    ng.epb(0, 1, ipv4(1))
    ng.block(0x0BAD, bytes(3 * MIN_CHUNK))
    ng.epb(0, 2, ipv4(2))
    (tmp_path / "in").write_bytes(ng.out)
    batch = PacketBatch(8)
    with PcapReader(tmp_path / "in", chunk_size=MIN_CHUNK) as r:
        while r.fill(batch):
            pass
        assert not r.truncated
    assert batch.packets() == [ipv4(1), ipv4(2)]


def test_pcapng_simple_packet_block_too_short_is_corrupt(tmp_path):
    ng = NG()
    ng.idb(LINKTYPE_RAW)
    ng.epb(0, 1, ipv4(1))
    ng.out += struct.pack("<III", 3, 12, 12)   # an SPB with no room for its length field
    (tmp_path / "in").write_bytes(ng.out)
    got = read_all(tmp_path / "in")
    assert [(g[2], g[3]) for g in got] == [(ipv4(1), 0), (b"", Drop.MALFORMED)]


def test_pcapng_truncated_trailing_statistics_block_is_no_packet(tmp_path):
    ng = NG()
    ng.idb(LINKTYPE_RAW)
    ng.epb(0, 1, ipv4(1))
    ng.block(5, bytes(40))
    (tmp_path / "in").write_bytes(ng.out[:-10])
    with PcapReader(tmp_path / "in") as r:
        b = PacketBatch(8)
        assert r.fill(b) == 1 and b.drop[0] == 0 and r.truncated


# -- cross-checks against scapy -----------------------------------------------------------

def scapy_packets():
    pytest.importorskip("scapy")
    from scapy.all import IP, UDP, Dot1Q, Ether, IPv6, Raw
    pkts = []
    for i in range(20):
        inner = (IP(src="10.1.0.1", dst="10.2.0.2", id=i) if i % 2 else
                 IPv6(src="2001:db8::1", dst="2001:db8::2")) / UDP(sport=i, dport=9) / Raw(
                     bytes(i))
        eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
        p = eth / Dot1Q(vlan=i) / inner if i % 3 == 0 else eth / inner
        p.time = Decimal(1_700_000_000) + Decimal(i) / Decimal(1000)
        pkts.append(p)
    return pkts


def ip_layer(p):
    from scapy.all import IP, IPv6
    return bytes(p[IP] if IP in p else p[IPv6])


@pytest.mark.parametrize("ng", [False, True])
def test_scapy_written_file(tmp_path, ng):
    from scapy.all import PcapNgWriter, wrpcap
    pkts = scapy_packets()
    if ng:
        with PcapNgWriter(str(tmp_path / "in")) as w:
            for p in pkts:
                w.write(p)
    else:
        wrpcap(str(tmp_path / "in"), pkts)
    got = read_all(tmp_path / "in", capacity=7)
    assert [g[2] for g in got] == [ip_layer(p) for p in pkts]
    assert [g[1] for g in got] == [bytes(p)[:len(bytes(p)) - len(ip_layer(p))] for p in pkts]
    assert [g[0] for g in got] == [int(p.time * 10**9) for p in pkts]


@pytest.mark.parametrize("fmt", [dict(), dict(big_endian=True), dict(nanosecond=True),
                                 dict(pcapng=True), dict(pcapng=True, tsresol=9)])
def test_scapy_reads_our_file(tmp_path, fmt):
    from scapy.all import RawPcapNgReader, RawPcapReader, rdpcap
    pkts = scapy_packets()
    write_pcap(tmp_path / "in", [bytes(p) for p in pkts], LINKTYPE_ETHERNET,
               timestamps=[int(p.time * 10**9) for p in pkts], **fmt)
    copy_file(tmp_path / "in", tmp_path / "out", capacity=6)
    back = rdpcap(str(tmp_path / "out"))
    assert [bytes(p) for p in back] == [bytes(p) for p in pkts]
    assert [p.time for p in back] == [p.time for p in pkts]
    raw_reader = RawPcapNgReader if fmt.get("pcapng") else RawPcapReader
    with raw_reader(str(tmp_path / "out")) as r:
        assert [data for data, _ in r] == [bytes(p) for p in pkts]


# -- streaming ----------------------------------------------------------------------------

@pytest.mark.parametrize("capacity,data_bytes", [(7, None), (500, 20_000)])
def test_fill_across_batches_and_chunks(tmp_path, capacity, data_bytes):
    """Every packet exactly once and in order, whether batches run out of slots or bytes,
    with records straddling the reader's buffer refills."""
    rng = np.random.default_rng(1)
    pkts = [ipv4(i, int(rng.integers(0, 1400))) for i in range(3000)]   # ~2 MiB
    write_pcap(tmp_path / "in", [ether(p) for p in pkts], LINKTYPE_ETHERNET)
    batch = PacketBatch(capacity, data_bytes=data_bytes)
    got, fills = [], 0
    with PcapReader(tmp_path / "in", chunk_size=MIN_CHUNK + 1001) as r:
        while True:
            batch.clear()
            n = r.fill(batch)
            if not n:
                break
            fills += 1
            assert n == batch.count
            got += batch.packets()
        assert r.records == len(pkts) and r.eof
    assert got == pkts
    assert fills >= len(pkts) // capacity


def test_large_capture_streams_in_bounded_memory(tmp_path):
    n, size = 200_000, 100
    path = tmp_path / "big.pcap"
    rec = ether(ipv4(0, size - 20))
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    one = struct.pack("<IIII", 0, 0, len(rec), len(rec)) + rec
    with open(path, "wb") as f:   # build the file in a few big writes
        f.write(hdr)
        for _ in range(n // 10_000):
            f.write(one * 10_000)
    assert os.path.getsize(path) > 20 << 20

    batch = PacketBatch(256)
    tracemalloc.start()
    try:
        total = ok = 0
        with PcapReader(path) as r, PcapWriter(tmp_path / "out.pcap", r) as w:
            while True:
                batch.clear()
                got = r.fill(batch)
                if not got:
                    break
                total += got
                ok += int((batch.drop[:batch.count] == 0).sum())
                w.write(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == ok == n
    assert peak < 16 << 20   # the 8 MiB read buffer plus small change, not the file
    assert os.path.getsize(tmp_path / "out.pcap") == os.path.getsize(path)


# -- property: any packets, any format ----------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=40),
       st.sampled_from(FORMATS), st.booleans(), st.integers(1, 9))
def test_round_trip_property(tmp_path_factory, payloads, fmt, eth, capacity):
    path = tmp_path_factory.mktemp("p") / "in"
    pkts = [bytes([0x45]) + p for p in payloads]
    frames = [ether(p) for p in pkts] if eth else pkts
    ts = [T0 + 1000 * i for i in range(len(pkts))]
    write_pcap(path, frames, LINKTYPE_ETHERNET if eth else LINKTYPE_RAW, timestamps=ts, **fmt)
    got = read_all(path, capacity=capacity)
    assert [g[2] for g in got] == pkts
    assert [g[0] for g in got] == ts
    copy_file(path, path.with_suffix(".out"), capacity=capacity)
    assert read_pcap(path.with_suffix(".out")) == list(zip(ts, frames))


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.booleans(),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 400))
def test_corrupted_files_never_crash(tmp_path_factory, pcapng, eth, edits, cut):
    """Random byte damage: the reader raises PcapError or returns packets, never crashes
    (the Numba kernels have no implicit bounds checks, so this guards the explicit ones)."""
    path = tmp_path_factory.mktemp("c") / "in"
    pkts = [ipv4(i, i * 7 % 90) for i in range(12)]
    write_pcap(path, [ether(p, tags=((0x8100, 1),) * (i % 3)) for i, p in enumerate(pkts)]
               if eth else pkts, LINKTYPE_ETHERNET if eth else LINKTYPE_RAW, pcapng=pcapng)
    data = bytearray(path.read_bytes())
    for at, value in edits:
        data[at % len(data)] = value
    path.write_bytes(bytes(data[:len(data) - cut]))
    try:
        got = read_all(path, capacity=5, data_bytes=4096)
    except PcapError:
        return
    assert len(got) <= len(pkts) + 1
    with PcapWriter(path.with_suffix(".out"), PcapFormat(pcapng=pcapng)) as w:
        batch = PacketBatch(16)
        for _, l2, pkt, drop in got:
            i = batch.add(pkt)
            batch.drop[i] = drop
        w.write(batch)
