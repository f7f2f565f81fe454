"""Numba kernels for engine/pcap.py: record scanning, L2 splitting and record writing.

Everything here is integer and byte work on numpy arrays. The scanners walk a buffer of
file bytes and stop, with a status code, at anything they cannot decide alone (the end of
the buffered data, a pcapng section or interface block, a corrupt length); the Python
side handles those rare events and calls again. Every read is bounds-checked against the
end of valid data, so a lying length field can never index past the buffer.
"""
from __future__ import annotations

import numba as nb
import numpy as np

# Scanner status codes (why a scan stopped).
ST_FULL = 0           # max_records found; more may follow
ST_NEED_MORE = 1      # the record at `pos` is not completely buffered
ST_CORRUPT = 2        # the record at `pos` has an impossible length / interface
ST_SECTION = 3        # pcapng Section Header Block at `pos` (Python parses it)
ST_INTERFACE = 4      # pcapng Interface Description Block at `pos` (Python parses it)
ST_SKIP = 5           # non-packet pcapng block at `pos` bigger than the buffer; aux = length
ST_BAD_LINKTYPE = 6   # a packet on an interface with an unsupported link type; aux = if id

# pcapng block types.
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_OPB = 0x00000002   # obsolete Packet Block (still written by old tools)
BT_SPB = 0x00000003
BT_EPB = 0x00000006

PCAP_REC_HDR = 16     # ts_sec, ts_frac, caplen, origlen
EPB_HDR = 28          # type, len, if id, ts hi, ts lo, caplen, origlen
OPB_HDR = 28          # type, len, if id(16)+drops(16), ts hi, ts lo, caplen, origlen
SPB_HDR = 12          # type, len, origlen
BLOCK_TRAILER = 4     # the repeated total length

# Ethernet
ETH_ADDRS = 12        # dst MAC + src MAC
ETH_HDR = 14
VLAN_TAG = 4
MAX_VLAN_TAGS = 4     # 12 + 4*4 + 2 = 30 <= batch.L2_MAX
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_8021Q = 0x8100
ETHERTYPE_8021AD = 0x88A8
ETHERTYPE_QINQ_OLD = 0x9100

# Timestamp resolution modes (pcapng if_tsresol: MSB clear = 10^-k, set = 2^-k).
TS_DECIMAL = 0
TS_BINARY = 1

NS_PER_S = 1_000_000_000


# -- byte access ------------------------------------------------------------------------

@nb.njit(cache=True, inline="always")
def rd16(b, p, be):
    x0 = np.int64(b[p])
    x1 = np.int64(b[p + 1])
    return (x0 << 8) | x1 if be else (x1 << 8) | x0


@nb.njit(cache=True, inline="always")
def rd32(b, p, be):
    x0 = np.int64(b[p])
    x1 = np.int64(b[p + 1])
    x2 = np.int64(b[p + 2])
    x3 = np.int64(b[p + 3])
    if be:
        return (x0 << 24) | (x1 << 16) | (x2 << 8) | x3
    return (x3 << 24) | (x2 << 16) | (x1 << 8) | x0


@nb.njit(cache=True, inline="always")
def wr16(b, p, v, be):
    if be:
        b[p] = (v >> 8) & 0xFF
        b[p + 1] = v & 0xFF
    else:
        b[p] = v & 0xFF
        b[p + 1] = (v >> 8) & 0xFF


@nb.njit(cache=True, inline="always")
def wr32(b, p, v, be):
    if be:
        b[p] = (v >> 24) & 0xFF
        b[p + 1] = (v >> 16) & 0xFF
        b[p + 2] = (v >> 8) & 0xFF
        b[p + 3] = v & 0xFF
    else:
        b[p] = v & 0xFF
        b[p + 1] = (v >> 8) & 0xFF
        b[p + 2] = (v >> 16) & 0xFF
        b[p + 3] = (v >> 24) & 0xFF


# -- timestamps -------------------------------------------------------------------------

@nb.njit(cache=True)
def ticks_to_ns(ticks, mode, exp):
    """pcapng tick count at resolution 10^-exp or 2^-exp -> nanoseconds (truncating)."""
    if mode == TS_DECIMAL:
        if exp <= 9:
            return ticks * (np.int64(10) ** (9 - exp))
        return ticks // (np.int64(10) ** (exp - 9))
    sec = ticks >> exp
    frac = ticks & ((np.int64(1) << exp) - 1)
    # frac * 10^9 must stay below 2^63: drop low fraction bits first when exp > 33.
    if exp > 33:
        frac >>= exp - 33
        exp = 33
    return sec * NS_PER_S + ((frac * NS_PER_S) >> exp)


@nb.njit(cache=True)
def ns_to_ticks(ns, mode, exp):
    """Inverse of ticks_to_ns. Binary fractions round up so that ticks -> ns -> ticks is
    exact whenever the resolution is no finer than 1 ns."""
    if mode == TS_DECIMAL:
        if exp <= 9:
            return ns // (np.int64(10) ** (9 - exp))
        return ns * (np.int64(10) ** (exp - 9))
    sec = ns // NS_PER_S
    frac = ns - sec * NS_PER_S
    if exp <= 33:
        return (sec << exp) + ((frac << exp) + NS_PER_S - 1) // NS_PER_S
    return (sec << exp) + (((frac << 33) + NS_PER_S - 1) // NS_PER_S << (exp - 33))


# -- classic pcap -----------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def scan_pcap(buf, pos, end, be, frac_ns, max_caplen, max_records,
              out_start, out_len, out_ts, out_end):
    """Find up to max_records complete records in buf[pos:end].

    frac_ns: nanoseconds per unit of the ts_frac field (1000 for microsecond files, 1 for
    nanosecond files). Per record k: data at out_start[k], out_len[k] bytes, out_ts[k] in
    ns, and out_end[k] = offset just past it. Returns (records, new pos, status).
    """
    n = 0
    while n < max_records:
        if pos + PCAP_REC_HDR > end:
            return n, pos, ST_NEED_MORE
        caplen = rd32(buf, pos + 8, be)
        if caplen > max_caplen:
            return n, pos, ST_CORRUPT
        data = pos + PCAP_REC_HDR
        if data + caplen > end:
            return n, pos, ST_NEED_MORE
        out_start[n] = data
        out_len[n] = caplen
        out_ts[n] = rd32(buf, pos, be) * NS_PER_S + rd32(buf, pos + 4, be) * frac_ns
        pos = data + caplen
        out_end[n] = pos
        n += 1
    return n, pos, ST_FULL


# -- pcapng -----------------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def scan_pcapng(buf, pos, end, be, max_block, max_caplen, max_records,
                if_count, if_ok, if_eth, if_tsmode, if_tsexp, if_tsoff_ns,
                out_start, out_len, out_ts, out_eth, out_end):
    """Walk pcapng blocks in buf[pos:end], collecting up to max_records packets.

    Packet blocks (EPB, SPB, obsolete PB) become records; blocks other than SHB and IDB
    are skipped. Per interface i < if_count: if_ok[i] (supported link type), if_eth[i]
    (Ethernet framing), timestamp resolution and offset. out_eth[k] says whether record k
    is an Ethernet frame. Returns (records, new pos, status, aux).
    """
    n = 0
    while n < max_records:
        if pos + 8 > end:
            return n, pos, ST_NEED_MORE, 0
        btype = rd32(buf, pos, be)
        if btype == BT_SHB:
            return n, pos, ST_SECTION, 0
        blen = rd32(buf, pos + 4, be)
        if blen < 12 or blen % 4 != 0:
            return n, pos, ST_CORRUPT, 0
        is_packet = btype == BT_EPB or btype == BT_SPB or btype == BT_OPB
        if blen > max_block:
            if is_packet or btype == BT_IDB:
                return n, pos, ST_CORRUPT, 0
            return n, pos, ST_SKIP, blen
        if pos + blen > end:
            return n, pos, ST_NEED_MORE, 0
        if rd32(buf, pos + blen - BLOCK_TRAILER, be) != blen:
            return n, pos, ST_CORRUPT, 0
        if btype == BT_IDB:
            return n, pos, ST_INTERFACE, 0
        if not is_packet:
            pos += blen
            continue

        # Packet block: interface, timestamp ticks, captured length, data offset.
        if btype == BT_SPB:
            if blen < SPB_HDR + BLOCK_TRAILER:
                return n, pos, ST_CORRUPT, 0
            iface = 0
            has_ts = False
            ticks = np.int64(0)
            hdr = SPB_HDR
            caplen = min(rd32(buf, pos + 8, be), blen - SPB_HDR - BLOCK_TRAILER)
        else:
            hdr = EPB_HDR
            if blen < hdr + BLOCK_TRAILER:
                return n, pos, ST_CORRUPT, 0
            if btype == BT_EPB:
                iface = rd32(buf, pos + 8, be)
            else:
                iface = rd16(buf, pos + 8, be)
            has_ts = True
            ticks = (rd32(buf, pos + 12, be) << 32) | rd32(buf, pos + 16, be)
            caplen = rd32(buf, pos + 20, be)
        if iface >= if_count or caplen > max_caplen or hdr + caplen + BLOCK_TRAILER > blen:
            return n, pos, ST_CORRUPT, 0
        if not if_ok[iface]:
            return n, pos, ST_BAD_LINKTYPE, iface
        out_start[n] = pos + hdr
        out_len[n] = caplen
        out_eth[n] = if_eth[iface]
        if has_ts:
            out_ts[n] = ticks_to_ns(ticks, if_tsmode[iface], if_tsexp[iface]) + if_tsoff_ns[iface]
        else:
            out_ts[n] = 0   # a Simple Packet Block carries no timestamp
        pos += blen
        out_end[n] = pos
        n += 1
    return n, pos, ST_FULL, 0


# -- Ethernet ---------------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def split_l2(src, starts, lens, is_eth, n, l2, l2_len, bad):
    """Split Ethernet frames into L2 header (-> l2[k], l2_len[k]) and IP packet.

    starts/lens are moved past the header in place. Frames that are not IPv4/IPv6 or too
    short for their header get bad[k] = 1 (they stay in the batch so counts add up); a
    frame whose header cannot even be parsed keeps all its bytes and l2_len 0.
    """
    for k in range(n):
        l2_len[k] = 0
        bad[k] = 0
        if not is_eth[k]:
            continue
        s = starts[k]
        ln = lens[k]
        if ln < ETH_HDR:
            bad[k] = 1
            continue
        hl = ETH_ADDRS
        etype = (np.int64(src[s + hl]) << 8) | src[s + hl + 1]
        tags = 0
        while (etype == ETHERTYPE_8021Q or etype == ETHERTYPE_8021AD
               or etype == ETHERTYPE_QINQ_OLD):
            if tags == MAX_VLAN_TAGS or hl + VLAN_TAG + 2 > ln:
                break
            hl += VLAN_TAG
            tags += 1
            etype = (np.int64(src[s + hl]) << 8) | src[s + hl + 1]
        if etype == ETHERTYPE_8021Q or etype == ETHERTYPE_8021AD or etype == ETHERTYPE_QINQ_OLD:
            bad[k] = 1   # too many tags, or the frame ends inside a tag
            continue
        hl += 2
        for j in range(hl):
            l2[k, j] = src[s + j]
        l2_len[k] = hl
        starts[k] = s + hl
        lens[k] = ln - hl
        if etype != ETHERTYPE_IPV4 and etype != ETHERTYPE_IPV6:
            bad[k] = 1


# -- writing ----------------------------------------------------------------------------

@nb.njit(cache=True, inline="always")
def _put_frame(out, p, buf, o, ln, l2row, l2n, eth):
    """Write [Ethernet header +] packet at out[p]; return the frame length.

    The EtherType follows the packet's IP version; a packet without a stored header (made
    by the engine) gets zero MAC addresses."""
    hl = 0
    if eth:
        etype = 0
        if l2n >= ETH_HDR:   # (l2n <= the row length: checked by _record_fits)
            hl = l2n
            for j in range(hl - 2):
                out[p + j] = l2row[j]
            etype = (np.int64(l2row[hl - 2]) << 8) | l2row[hl - 1]
        else:
            hl = ETH_HDR
            for j in range(ETH_ADDRS):
                out[p + j] = 0
        if ln > 0:
            version = buf[o] >> 4
            if version == 4:
                etype = ETHERTYPE_IPV4
            elif version == 6:
                etype = ETHERTYPE_IPV6
        wr16(out, p + hl - 2, etype, True)
    d, f = np.uint64(p + hl), np.uint64(o)     # unsigned: lets the copy vectorise
    for j in range(ln):
        out[d + np.uint64(j)] = buf[f + np.uint64(j)]
    return hl + ln


@nb.njit(cache=True, inline="always")
def _record_fits(buf, off, length, l2_len, i, out, p, hdr, l2_max):
    """Bounds check before writing packet i at out[p]: its bytes inside buf, its stored L2
    header inside its row, and room in out for header + L2 + packet + pad + trailer."""
    o = off[i]
    ln = length[i]
    return (o >= 0 and ln >= 0 and o + ln <= buf.shape[0] and l2_len[i] <= l2_max
            and p + hdr + max(np.int64(l2_len[i]), ETH_HDR) + ln + 3 + BLOCK_TRAILER
            <= out.shape[0])


@nb.njit(cache=True, nogil=True)
def write_pcap_records(buf, off, length, drop, l2, l2_len, ts_ns, count,
                       eth, be, frac_ns, out):
    """Classic pcap records for every packet with drop == 0.

    Returns bytes written, or -1 - i if packet i fails the bounds check (the caller
    sizes out for every packet; this only guards against corrupt batch metadata)."""
    p = 0
    for i in range(count):
        if drop[i] != 0:
            continue
        if not _record_fits(buf, off, length, l2_len, i, out, p, PCAP_REC_HDR, l2.shape[1]):
            return -1 - i
        flen = _put_frame(out, p + PCAP_REC_HDR, buf, off[i], length[i], l2[i], l2_len[i], eth)
        sec = ts_ns[i] // NS_PER_S
        wr32(out, p, sec, be)
        wr32(out, p + 4, (ts_ns[i] - sec * NS_PER_S) // frac_ns, be)
        wr32(out, p + 8, flen, be)
        wr32(out, p + 12, flen, be)
        p += PCAP_REC_HDR + flen
    return p


@nb.njit(cache=True, nogil=True)
def write_epb_records(buf, off, length, drop, l2, l2_len, ts_ns, count,
                      eth, be, tsmode, tsexp, out):
    """pcapng Enhanced Packet Blocks (interface 0) for every packet with drop == 0.

    Returns bytes written, or -1 - i as write_pcap_records does."""
    p = 0
    for i in range(count):
        if drop[i] != 0:
            continue
        if not _record_fits(buf, off, length, l2_len, i, out, p, EPB_HDR, l2.shape[1]):
            return -1 - i
        flen = _put_frame(out, p + EPB_HDR, buf, off[i], length[i], l2[i], l2_len[i], eth)
        padded = (flen + 3) & ~3
        for j in range(flen, padded):
            out[p + EPB_HDR + j] = 0
        blen = EPB_HDR + padded + BLOCK_TRAILER
        ticks = ns_to_ticks(ts_ns[i], tsmode, tsexp)
        wr32(out, p, BT_EPB, be)
        wr32(out, p + 4, blen, be)
        wr32(out, p + 8, 0, be)
        wr32(out, p + 12, (ticks >> 32) & 0xFFFFFFFF, be)
        wr32(out, p + 16, ticks & 0xFFFFFFFF, be)
        wr32(out, p + 20, flen, be)
        wr32(out, p + 24, flen, be)
        wr32(out, p + blen - BLOCK_TRAILER, blen, be)
        p += blen
    return p
