"""Streaming pcap / pcapng reader and writer for PacketBatch.

The reader keeps one fixed buffer of file bytes (CHUNK_SIZE). Numba kernels
(engine/kernels_pcap.py) find record boundaries in it, split Ethernet headers off into
`batch.l2`, and `PacketBatch.add_many` copies the IP packets into the batch, so memory
stays bounded whatever the capture size and there is no per-packet Python. Python only
handles the rare events the kernels stop at: buffer refills, pcapng section and interface
blocks, corruption and end of file.

The writer mirrors the reader's format (classic pcap with the same byte order and
timestamp resolution, or pcapng with one SHB + IDB of the same link type and if_tsresol)
and turns each batch into one numpy buffer, written with one file write.

Damage policy (see CONTRACT-SPU.md, "files"): a file that ends mid-record, or whose record
length is impossible, yields its complete packets normally and then one empty packet
pre-dropped as MALFORMED for the remainder; `reader.truncated` is then True. Anything
wrong before the first packet (not a capture, unsupported link type) raises PcapError.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .batch import L2_MAX, PacketBatch
from .drops import Drop
from .kernels_pcap import (BT_EPB, BT_IDB, BT_OPB, BT_SHB, BT_SPB, EPB_HDR, PCAP_REC_HDR,
                           ST_BAD_LINKTYPE, ST_CORRUPT, ST_FULL, ST_INTERFACE, ST_NEED_MORE,
                           ST_SECTION, ST_SKIP, TS_BINARY, TS_DECIMAL,
                           scan_pcap, scan_pcapng, split_l2, write_epb_records,
                           write_pcap_records)

__all__ = ["PcapError", "PcapFormat", "PcapReader", "PcapWriter", "read_pcap", "write_pcap",
           "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_IPV4", "LINKTYPE_IPV6"]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101      # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
ETHERNET_LINKTYPES = frozenset({LINKTYPE_ETHERNET})
RAW_LINKTYPES = frozenset({LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})
SUPPORTED_LINKTYPES = ETHERNET_LINKTYPES | RAW_LINKTYPES
LINKTYPE_MASK = 0xFFFF  # classic pcap keeps FCS flags in the upper bits of the field

# Classic pcap: the magic number, read in the file's byte order, gives the byte order and
# the unit of the fractional timestamp.
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_VERSION = (2, 4)
PCAP_GLOBAL_HDR = 24
PCAP_MAGICS = {  # first four file bytes -> (big endian, nanosecond)
    struct.pack("<I", PCAP_MAGIC_US): (False, False),
    struct.pack(">I", PCAP_MAGIC_US): (True, False),
    struct.pack("<I", PCAP_MAGIC_NS): (False, True),
    struct.pack(">I", PCAP_MAGIC_NS): (True, True),
}

# pcapng
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_VERSION = (1, 0)
SHB_MIN = 28            # type, len, BOM, major, minor, section length(8), len
IDB_MIN = 20            # type, len, link type, reserved, snaplen, len
OPT_HDR = 4             # option code(16) + length(16)
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
TSRESOL_BINARY = 0x80   # if_tsresol MSB set: 2^-n, else 10^-n
DEFAULT_TSRESOL = 6     # microseconds when an IDB has no if_tsresol
PACKET_BLOCKS = frozenset({BT_EPB, BT_SPB, BT_OPB})

# Limits
MAX_CAPLEN = 262144     # libpcap's MAXIMUM_SNAPLEN: anything larger means a corrupt file
CHUNK_SIZE = 8 << 20    # file bytes buffered at a time; also the largest pcapng block kept
NS_PER_S = 1_000_000_000
# Writer: worst-case bytes per record beyond the packet itself (EPB header, the longest
# stored L2 header, padding, trailer; classic pcap needs less).
WRITE_OVERHEAD = EPB_HDR + L2_MAX + 3 + 4


class PcapError(ValueError):
    """An unreadable or unsupported capture. str(err) is a one-line message."""


class _Corrupt(Exception):
    """Internal: the bytes at the read position make no sense (handled as truncation)."""


@dataclass(frozen=True)
class PcapFormat:
    """What a writer needs to reproduce a capture's format."""
    pcapng: bool = False
    big_endian: bool = False
    linktype: int = LINKTYPE_RAW
    nanosecond: bool = False        # classic pcap only
    tsresol: int = DEFAULT_TSRESOL  # pcapng only: the if_tsresol option byte
    snaplen: int = MAX_CAPLEN

    @property
    def ethernet(self) -> bool:
        return self.linktype in ETHERNET_LINKTYPES


def _tsresol_mode(tsresol: int) -> tuple[int, int]:
    """if_tsresol byte -> (TS_DECIMAL | TS_BINARY, exponent)."""
    if tsresol & TSRESOL_BINARY:
        return TS_BINARY, tsresol & ~TSRESOL_BINARY
    return TS_DECIMAL, tsresol


def _tsresol_ok(tsresol: int) -> bool:
    # Tick arithmetic is int64: 10^18 and 2^62 are the finest resolutions that fit.
    mode, exp = _tsresol_mode(tsresol)
    return exp <= (18 if mode == TS_DECIMAL else 62)


def _parse_idb_options(opts: bytes, be: bool) -> tuple[int, int]:
    """IDB options -> (if_tsresol byte, if_tsoffset seconds). Ignores the rest."""
    e = ">" if be else "<"
    tsresol, tsoffset = DEFAULT_TSRESOL, 0
    p = 0
    while p + OPT_HDR <= len(opts):
        code, ln = struct.unpack_from(e + "HH", opts, p)
        p += OPT_HDR
        if code == OPT_ENDOFOPT:
            break
        if p + ln > len(opts):
            raise _Corrupt("IDB option runs past the block")
        if code == OPT_IF_TSRESOL and ln >= 1:
            tsresol = opts[p]
        elif code == OPT_IF_TSOFFSET and ln >= 8:
            tsoffset = struct.unpack_from(e + "q", opts, p)[0]
        p += (ln + 3) & ~3
    if not _tsresol_ok(tsresol):
        raise _Corrupt(f"if_tsresol {tsresol:#x} out of range")
    return tsresol, tsoffset


class _Interfaces:
    """The current pcapng section's interface table, as arrays for scan_pcapng."""

    def __init__(self):
        self.linktypes: list[int] = []
        self._rows: list[tuple[int, int, int, int, int]] = []
        self.rebuild()

    def add(self, linktype: int, tsresol: int, tsoffset_s: int) -> None:
        mode, exp = _tsresol_mode(tsresol)
        self.linktypes.append(linktype)
        self._rows.append((linktype in SUPPORTED_LINKTYPES, linktype in ETHERNET_LINKTYPES,
                           mode, exp, tsoffset_s * NS_PER_S))
        self.rebuild()

    def rebuild(self) -> None:
        cols = list(zip(*self._rows)) or [()] * 5
        self.ok = np.array(cols[0], np.uint8)
        self.eth = np.array(cols[1], np.uint8)
        self.tsmode = np.array(cols[2], np.int64)
        self.tsexp = np.array(cols[3], np.int64)
        self.tsoff_ns = np.array(cols[4], np.int64)

    def __len__(self) -> int:
        return len(self.linktypes)


class PcapReader:
    """Stream packets from a pcap or pcapng file into PacketBatches.

        with PcapReader("in.pcap") as r:
            while r.fill(batch): ...

    Attributes: `format` (PcapFormat, for PcapWriter), `linktype`, `truncated` (the file
    was cut short or corrupt; the remainder became one MALFORMED packet), `truncated_at`
    (file offset of the damage), `records` (packets delivered so far).
    """

    def __init__(self, path, chunk_size: int = CHUNK_SIZE):
        if chunk_size < PCAP_REC_HDR + MAX_CAPLEN:
            raise ValueError("chunk_size must hold the largest record")
        self.path = str(path)
        try:
            self._f = open(path, "rb", buffering=0)   # we do our own buffering
        except OSError as e:
            raise PcapError(f"{self.path}: {e.strerror or e}") from None
        self._buf = np.empty(chunk_size, np.uint8)
        self._pos = 0            # next unread byte in _buf
        self._end = 0            # end of valid bytes in _buf
        self._file_pos = 0       # file offset of _buf[_end]
        self._done = False       # no more records will be produced
        self._pending_bad: Optional[int] = None   # ts of a MALFORMED remainder still to add
        self._scratch_n = 0
        self.truncated = False
        self.truncated_at: Optional[int] = None
        self.records = 0
        try:
            self._open()
        except _Corrupt as e:
            self.close()
            raise PcapError(f"{self.path}: not a valid capture ({e})") from None
        except BaseException:
            self.close()
            raise

    # -- header ---------------------------------------------------------------------------
    def _open(self) -> None:
        if not self._ensure(4):
            raise PcapError(f"{self.path}: not a pcap or pcapng file (too short)")
        magic = self._bytes(0, 4)
        if magic in PCAP_MAGICS:
            self._open_pcap(*PCAP_MAGICS[magic])
        elif magic == struct.pack("<I", BT_SHB):
            self._open_pcapng()
        else:
            raise PcapError(f"{self.path}: not a pcap or pcapng file (magic {magic.hex()})")

    def _open_pcap(self, be: bool, ns: bool) -> None:
        if not self._ensure(PCAP_GLOBAL_HDR):
            raise PcapError(f"{self.path}: truncated pcap file header")
        _, _, _, _, _, snaplen, network = struct.unpack(
            (">" if be else "<") + "IHHiIII", self._bytes(0, PCAP_GLOBAL_HDR))
        linktype = network & LINKTYPE_MASK
        self._check_linktype(linktype)
        self._pcapng = False
        self._be = be
        self._frac_ns = 1 if ns else 1000
        self._eth = linktype in ETHERNET_LINKTYPES
        self.format = PcapFormat(False, be, linktype, nanosecond=ns, snaplen=snaplen)
        self._pos = PCAP_GLOBAL_HDR

    def _open_pcapng(self) -> None:
        self._pcapng = True
        self._be = False   # until the section header says otherwise
        self._ifaces = _Interfaces()
        self.format = None
        self._parse_shb()
        if self._done:
            raise _Corrupt("truncated section header")
        # Read up to the first interface: it fixes the link type a writer will use. With
        # no interface yet, a packet block scans as ST_CORRUPT, which is right.
        while not self._ifaces and not self._done:
            _, status, aux = self._scan(1)
            if status == ST_CORRUPT:
                raise _Corrupt(f"bad block at offset {self._offset()}")
            self._handle(status, aux)
        if self.format is None:   # a capture without any interface: no packets either
            self.format = PcapFormat(True, self._be, LINKTYPE_RAW)

    def _check_linktype(self, linktype: int) -> None:
        if linktype not in SUPPORTED_LINKTYPES:
            raise PcapError(f"{self.path}: unsupported link type {linktype} "
                            "(supported: 1 Ethernet, 101/228/229 raw IP)")

    @property
    def linktype(self) -> int:
        return self.format.linktype

    # -- pcapng control blocks (rare; plain Python) ---------------------------------------
    def _parse_shb(self) -> None:
        """Section Header Block at _pos: sets the byte order, resets the interfaces."""
        if not self._ensure(12):
            return self._at_eof()
        bom = self._bytes(8, 4)
        if bom == struct.pack("<I", PCAPNG_BOM):
            be = False
        elif bom == struct.pack(">I", PCAPNG_BOM):
            be = True
        else:
            raise _Corrupt(f"bad section byte-order magic {bom.hex()}")
        blen = struct.unpack((">" if be else "<") + "I", self._bytes(4, 4))[0]
        if blen < SHB_MIN or blen % 4 or blen > self._buf.size:
            raise _Corrupt(f"bad section header length {blen}")
        if not self._ensure(blen):
            return self._at_eof()
        major = struct.unpack((">" if be else "<") + "H", self._bytes(12, 2))[0]
        if major != PCAPNG_VERSION[0]:
            raise _Corrupt(f"unsupported pcapng version {major}")
        self._be = be
        self._ifaces = _Interfaces()
        self._pos += blen

    def _parse_idb(self) -> None:
        """Interface Description Block at _pos, complete in the buffer (scan_pcapng checked)."""
        e = ">" if self._be else "<"
        blen = struct.unpack(e + "I", self._bytes(4, 4))[0]
        if blen < IDB_MIN:
            raise _Corrupt(f"interface block too short ({blen})")
        linktype, _, snaplen = struct.unpack(e + "HHI", self._bytes(8, 8))
        tsresol, tsoffset = _parse_idb_options(self._bytes(16, blen - IDB_MIN), self._be)
        if self.format is None:   # the file's first interface defines the output format
            self._check_linktype(linktype)
            self.format = PcapFormat(True, self._be, linktype, tsresol=tsresol,
                                     snaplen=snaplen)
        self._ifaces.add(linktype, tsresol, tsoffset)
        self._pos += blen

    # -- buffer ---------------------------------------------------------------------------
    def _bytes(self, rel: int, n: int) -> bytes:
        return self._buf[self._pos + rel:self._pos + rel + n].tobytes()

    def _refill(self) -> bool:
        """Move the unread tail to the front and read more. False at end of file."""
        keep = self._end - self._pos
        if self._pos:
            self._buf[:keep] = self._buf[self._pos:self._end]
            self._pos, self._end = 0, keep
        return self._read_into(self._end, self._buf.size - self._end) > 0

    def _read_into(self, start: int, n: int) -> int:
        view = memoryview(self._buf)[start:start + n]
        got = 0
        while got < n:
            k = self._f.readinto(view[got:])
            if not k:
                break
            got += k
        self._end = start + got
        self._file_pos += got
        return got

    def _ensure(self, n: int) -> bool:
        """Make n bytes from _pos available; False if the file ends first."""
        while self._end - self._pos < n:
            if not self._refill():
                return False
        return True

    def _skip(self, n: int) -> None:
        """Skip an n-byte block at _pos that is larger than the buffer."""
        n -= self._end - self._pos
        self._pos = self._end = 0
        while n > 0:
            got = self._read_into(0, min(n, self._buf.size))
            if not got:
                return self._damaged(False, 0)   # cut-off control block: no packet lost
            n -= got
        self._end = 0

    def _offset(self) -> int:
        """File offset of _pos."""
        return self._file_pos - (self._end - self._pos)

    # -- damage ---------------------------------------------------------------------------
    def _at_eof(self) -> None:
        """The file ended at _pos: cleanly, or in the middle of a record."""
        left = self._end - self._pos
        self._done = True
        if left == 0:
            return
        if not self._pcapng:
            ts = 0
            if left >= 8:   # the partial record header still carries the timestamp
                sec, frac = struct.unpack((">" if self._be else "<") + "II", self._bytes(0, 8))
                ts = sec * NS_PER_S + frac * self._frac_ns
            return self._damaged(True, ts)
        # A cut-off pcapng control block (statistics, name resolution) is no packet.
        btype = (struct.unpack((">" if self._be else "<") + "I", self._bytes(0, 4))[0]
                 if left >= 4 else None)
        self._damaged(btype is None or btype in PACKET_BLOCKS, 0)

    def _damaged(self, is_packet: bool, ts: int) -> None:
        """Stop reading here; the remainder becomes one MALFORMED packet if it is one."""
        self.truncated = True
        self.truncated_at = self._offset()
        self._done = True
        if is_packet:
            self._pending_bad = ts

    def _corrupt(self) -> None:
        ts = 0
        if not self._pcapng and self._end - self._pos >= 8:
            sec, frac = struct.unpack((">" if self._be else "<") + "II", self._bytes(0, 8))
            ts = sec * NS_PER_S + frac * self._frac_ns
        self._damaged(True, ts)

    # -- records --------------------------------------------------------------------------
    def _grow_scratch(self, n: int) -> None:
        if n <= self._scratch_n:
            return
        self._scratch_n = n
        self._start = np.empty(n, np.int64)
        self._len = np.empty(n, np.int64)
        self._ts = np.empty(n, np.int64)
        self._rec_end = np.empty(n, np.int64)
        self._is_eth = np.empty(n, np.uint8)
        self._l2_len = np.empty(n, np.uint8)
        self._bad = np.empty(n, np.uint8)

    def _scan(self, room: int) -> tuple[int, int, int]:
        """Run the format's scanner over buffered bytes: (records, status, aux)."""
        self._grow_scratch(room)
        if self._pcapng:
            i = self._ifaces
            n, pos, status, aux = scan_pcapng(
                self._buf, self._pos, self._end, self._be, self._buf.size, MAX_CAPLEN, room,
                len(i), i.ok, i.eth, i.tsmode, i.tsexp, i.tsoff_ns,
                self._start, self._len, self._ts, self._is_eth, self._rec_end)
        else:
            n, pos, status = scan_pcap(
                self._buf, self._pos, self._end, self._be, self._frac_ns, MAX_CAPLEN, room,
                self._start, self._len, self._ts, self._rec_end)
            self._is_eth[:n] = self._eth
            aux = 0
        self._pos = pos
        return n, status, aux

    def _handle(self, status: int, aux: int) -> None:
        """React to whatever stopped a scan (other than a full batch)."""
        if status == ST_NEED_MORE:
            if not self._refill():
                self._at_eof()
        elif status == ST_SECTION:
            self._parse_shb()
        elif status == ST_INTERFACE:
            self._parse_idb()
        elif status == ST_SKIP:
            self._skip(aux)
        elif status == ST_CORRUPT:
            self._corrupt()
        elif status == ST_BAD_LINKTYPE:
            raise PcapError(f"{self.path}: unsupported link type "
                            f"{self._ifaces.linktypes[aux]} on interface {aux}")

    def _deliver(self, batch: PacketBatch, n: int, scan_pos: int) -> int:
        """Move n scanned records into the batch; rewind past those that did not fit."""
        first = batch.count
        split_l2(self._buf, self._start, self._len, self._is_eth, n,
                 batch.l2[first:first + n], self._l2_len, self._bad)
        added = batch.add_many(self._buf, self._start[:n], self._len[:n])
        last = first + added
        batch.ts_ns[first:last] = self._ts[:added]
        batch.l2_len[first:last] = self._l2_len[:added]
        batch.drop[first:last] = self._bad[:added] * np.uint8(Drop.MALFORMED)
        if added < n:
            if batch.count == 0:
                raise OverflowError(f"a {int(self._len[0])}-byte packet does not fit in an "
                                    "empty batch; give the batch more data_bytes")
            self._pos = int(self._rec_end[added - 1]) if added else scan_pos
        self.records += added
        return added

    def _add_pending(self, batch: PacketBatch) -> bool:
        if not batch.has_room(0):
            return False
        i = batch.add(b"", ts_ns=self._pending_bad)
        batch.drop[i] = Drop.MALFORMED
        self._pending_bad = None
        self.records += 1
        return True

    def fill(self, batch: PacketBatch) -> int:
        """Append packets until the batch or the file is exhausted; return how many.

        0 means end of file (or a batch that was already full). Ethernet headers go to
        batch.l2; frames that are not IPv4/IPv6 arrive pre-dropped as MALFORMED.
        """
        total = 0
        while batch.count < batch.capacity:
            if self._done:
                if self._pending_bad is not None and self._add_pending(batch):
                    total += 1
                break
            scan_pos = self._pos
            try:
                n, status, aux = self._scan(batch.capacity - batch.count)
                if n:
                    added = self._deliver(batch, n, scan_pos)
                    total += added
                    if added < n:
                        break     # out of byte room
                if status != ST_FULL:
                    self._handle(status, aux)
            except _Corrupt:
                self._corrupt()
        return total

    @property
    def eof(self) -> bool:
        return self._done and self._pending_bad is None

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PcapReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _file_header(fmt: PcapFormat) -> bytes:
    """Global header (pcap) or SHB + IDB (pcapng) for fmt."""
    e = ">" if fmt.big_endian else "<"
    if not fmt.pcapng:
        magic = PCAP_MAGIC_NS if fmt.nanosecond else PCAP_MAGIC_US
        # Encryption makes packets longer than the input's snaplen allowed.
        snaplen = max(fmt.snaplen, MAX_CAPLEN)
        return struct.pack(e + "IHHiIII", magic, *PCAP_VERSION, 0, 0, snaplen, fmt.linktype)
    shb = struct.pack(e + "IIIHHqI", BT_SHB, SHB_MIN, PCAPNG_BOM, *PCAPNG_VERSION, -1, SHB_MIN)
    opts = struct.pack(e + "HHB3x", OPT_IF_TSRESOL, 1, fmt.tsresol)
    opts += struct.pack(e + "HH", OPT_ENDOFOPT, 0)
    idb_len = IDB_MIN + len(opts)
    # snaplen 0: no limit (outputs may outgrow the input's snaplen).
    idb = struct.pack(e + "IIHHI", BT_IDB, idb_len, fmt.linktype, 0, 0) + opts
    return shb + idb + struct.pack(e + "I", idb_len)


class PcapWriter:
    """Write PacketBatches in the format of a reader (or an explicit PcapFormat).

    Every packet with drop == 0 is written in order with its own timestamp. On Ethernet
    outputs the frame is the packet's stored L2 header (zero MACs if it has none) with the
    EtherType set from the IP version, then the packet; short frames are not padded.
    """

    def __init__(self, path, like: Union[PcapReader, PcapFormat, None] = None):
        if isinstance(like, PcapReader):
            like = like.format
        self.format = like or PcapFormat()
        if not _tsresol_ok(self.format.tsresol):
            raise ValueError(f"if_tsresol {self.format.tsresol:#x} out of range")
        self._mode, self._exp = _tsresol_mode(self.format.tsresol)
        self._out = np.empty(0, np.uint8)
        self.records = 0
        self._f = open(path, "wb")
        self._f.write(_file_header(self.format))

    def write(self, batch: PacketBatch) -> int:
        """Write the batch's passed packets with one file write; return how many."""
        count = batch.count
        if count == 0:
            return 0
        need = int(batch.length[:count].sum()) + count * WRITE_OVERHEAD
        if self._out.size < need:
            self._out = np.empty(max(need, 2 * self._out.size), np.uint8)
        args = (batch.buf, batch.off, batch.length, batch.drop, batch.l2, batch.l2_len,
                batch.ts_ns, count, self.format.ethernet, self.format.big_endian)
        if self.format.pcapng:
            nbytes = write_epb_records(*args, self._mode, self._exp, self._out)
        else:
            nbytes = write_pcap_records(*args, 1 if self.format.nanosecond else 1000,
                                        self._out)
        if nbytes < 0:
            raise ValueError(f"packet {-nbytes - 1} lies outside the batch buffer")
        self._f.write(memoryview(self._out[:nbytes]))
        written = count - int(np.count_nonzero(batch.drop[:count]))
        self.records += written
        return written

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- convenience helpers for tests and tools (plain Python, not for volume) ---------------

def write_pcap(path, packets, linktype: int = LINKTYPE_RAW, *, timestamps=None,
               big_endian: bool = False, nanosecond: bool = False, pcapng: bool = False,
               tsresol: int = DEFAULT_TSRESOL) -> None:
    """Write frames (bytes, already framed for linktype) with ns timestamps (default i us)."""
    packets = [bytes(p) for p in packets]
    if timestamps is None:
        timestamps = [i * 1000 for i in range(len(packets))]
    fmt = PcapFormat(pcapng, big_endian, linktype, nanosecond, tsresol)
    e = ">" if big_endian else "<"
    mode, exp = _tsresol_mode(tsresol)
    out = [_file_header(fmt)]
    for ts, p in zip(timestamps, packets):
        if pcapng:
            ticks = _ns_to_ticks(ts, mode, exp)
            pad = -len(p) % 4
            blen = EPB_HDR + len(p) + pad + 4
            out.append(struct.pack(e + "IIIIIII", BT_EPB, blen, 0, ticks >> 32,
                                   ticks & 0xFFFFFFFF, len(p), len(p))
                       + p + b"\0" * pad + struct.pack(e + "I", blen))
        else:
            sec, frac = divmod(ts, NS_PER_S)
            out.append(struct.pack(e + "IIII", sec, frac if nanosecond else frac // 1000,
                                   len(p), len(p)) + p)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def _ns_to_ticks(ns: int, mode: int, exp: int) -> int:
    if mode == TS_DECIMAL:
        return ns * 10 ** exp // NS_PER_S
    return -(-ns * (1 << exp) // NS_PER_S)   # round up, as the writer kernel does


def _ticks_to_ns(ticks: int, mode: int, exp: int) -> int:
    if mode == TS_DECIMAL:
        return ticks * NS_PER_S // 10 ** exp
    return ticks * NS_PER_S >> exp


def read_pcap(path) -> list[tuple[int, bytes]]:
    """All records of a pcap/pcapng file as (ts_ns, frame bytes), L2 headers included.

    An independent, simple parser (a cross-check for PcapReader). Stops quietly at a
    truncated record.
    """
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in PCAP_MAGICS:
        return _read_pcap_classic(data, *PCAP_MAGICS[magic])
    if magic == struct.pack("<I", BT_SHB):
        return _read_pcapng(data)
    raise PcapError(f"{path}: not a pcap or pcapng file")


def _read_pcap_classic(data: bytes, be: bool, ns: bool) -> list[tuple[int, bytes]]:
    e = ">" if be else "<"
    out = []
    p = PCAP_GLOBAL_HDR
    while p + PCAP_REC_HDR <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(e + "IIII", data, p)
        p += PCAP_REC_HDR
        if p + caplen > len(data):
            break
        out.append((sec * NS_PER_S + frac * (1 if ns else 1000), data[p:p + caplen]))
        p += caplen
    return out


def _read_pcapng(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    ifaces: list[tuple[int, int, int]] = []   # (mode, exp, offset ns)
    e = "<"
    p = 0
    while p + 12 <= len(data):
        btype = struct.unpack_from("<I", data, p)[0]
        if btype == BT_SHB:
            e = ">" if data[p + 8:p + 12] == struct.pack(">I", PCAPNG_BOM) else "<"
            ifaces = []
        btype, blen = struct.unpack_from(e + "II", data, p)
        if blen < 12 or p + blen > len(data):
            break
        body = data[p + 8:p + blen - 4]
        if btype == BT_IDB:
            tsresol, off = _parse_idb_options(body[8:], e == ">")
            ifaces.append((*_tsresol_mode(tsresol), off * NS_PER_S))
        elif btype in (BT_EPB, BT_OPB):
            iface = struct.unpack_from(e + ("I" if btype == BT_EPB else "H"), body)[0]
            hi, lo, caplen = struct.unpack_from(e + "III", body, 4)
            mode, exp, off = ifaces[iface]
            out.append((_ticks_to_ns(hi << 32 | lo, mode, exp) + off, body[20:20 + caplen]))
        elif btype == BT_SPB:
            origlen = struct.unpack_from(e + "I", body)[0]
            out.append((0, body[4:4 + min(origlen, len(body) - 4)]))
        p += blen
    return out
