# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""TUN offloads for the gateway: TCP segmentation of what the kernel reads out (TSO in)
and coalescing of what we write in (GRO out), on a TUN opened with IFF_VNET_HDR.

Every read/write on such a TUN carries a 10-byte struct virtio_net_hdr first
(<linux/virtio_net.h>; little endian, as the TUN uses on little-endian hosts):

    u8 flags (NEEDS_CSUM 1, DATA_VALID 2)  u8 gso_type (NONE 0, TCPV4 1, TCPV6 4, ECN 0x80)
    u16 hdr_len  u16 gso_size  u16 csum_start  u16 csum_offset

Read side (tun_read_offload): with TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the
kernel hands over TCP super-segments of up to 64 KiB and packets whose checksum is only
started (NEEDS_CSUM: the field holds the folded pseudo-header sum). Each super-segment is
cut into gso_size pieces straight into PacketBatch slots, exactly as the kernel's software
GSO would have sent them (net/ipv4/tcp_offload.c): IP and TCP headers copied, IPv4 total
length, ID (+1 per segment) and header checksum, IPv6 payload length, TCP sequence number,
CWR only on the first segment, FIN/PSH only on the last, full TCP checksum. A packet that
does not fit the batch stays pending in the TsoState and is continued by the next call.
A NEEDS_CSUM packet that is not GSO gets its checksum completed (RFC 1071 sum from
csum_start; 0 becomes 0xFFFF as skb_checksum_help does). vnet headers that do not hold
together with their packet are counted drops (rx_vnet_bad / rx_gso_bad), never trusted.

Write side (tun_write_offload): runs of consecutive engine outputs that are in-order TCP
segments of one flow (same IP header but length/ID/checksum, same ports, ack, window and
options, flags ACK with PSH allowed only on the last, every segment but the last of the
first one's payload size, valid IPv4 header and TCP checksums) are written as one packet
of at most 65535 bytes with gso_type TCPV4/TCPV6, gso_size the segment payload size, and
NEEDS_CSUM with the pseudo-header sum over the whole TCP length in the checksum field
(what the kernel's own GRO hands up). Everything else is written unchanged behind a zero
vnet header. The first segment's headers are rewritten in the batch buffer (restored if
the kernel refuses the coalesced write, which then falls back to single writes).

Counters: the TUN's normal _netio stats vector (rx_/tx_packets and bytes count IP packets
as the engine sees them) plus an offload vector named by OFFLOAD_COUNTERS.
"""
import numpy as np

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memcmp, memset, memmove

from engine._libc_net cimport *
from engine._slots cimport Slots, _slots, _now_ns, ERRNO_SLOTS, _count_errno, _read_counted

from engine import _netio
from engine.batch import HEADROOM as _HEADROOM, SLOT_ALIGN as _SLOT_ALIGN, \
    TAILROOM as _TAILROOM

cdef extern from "<sys/uio.h>" nogil:
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

cdef Py_ssize_t HEADROOM = _HEADROOM
cdef Py_ssize_t TAILROOM = _TAILROOM
cdef Py_ssize_t SLOT_ALIGN = _SLOT_ALIGN

# <linux/virtio_net.h>
cdef enum:
    VNET_HDR = 10
    F_NEEDS_CSUM = 1
    F_DATA_VALID = 2
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_TCPV6 = 4
    GSO_ECN = 0x80
    P_TCP = 6
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_ACK = 0x10
    TCP_CWR = 0x80
    MAX_IP = 65535
    SCRATCH = VNET_HDR + MAX_IP + 64    # one read: header + the largest IP packet + spare
    GRO_MAX_SEGS = 64                   # segments per coalesced write (iovec array bound)

# indices into the _netio stats vector; checked against _netio.COUNTERS at import
cdef enum:
    S_RX_PACKETS = 0
    S_RX_BYTES = 1
    S_TX_PACKETS = 2
    S_TX_BYTES = 3
    S_RX_TRUNCATED = 4
    S_TX_MALFORMED = 9
    S_TX_ERRORS = 10
    S_RX_ERRORS = 11

for _i, _name in ((S_RX_PACKETS, "rx_packets"), (S_RX_BYTES, "rx_bytes"),
                  (S_TX_PACKETS, "tx_packets"), (S_TX_BYTES, "tx_bytes"),
                  (S_RX_TRUNCATED, "rx_truncated"), (S_TX_MALFORMED, "tx_malformed"),
                  (S_TX_ERRORS, "tx_errors"), (S_RX_ERRORS, "rx_errors")):
    if _netio.COUNTERS[_i] != _name:
        raise ImportError("engine._tun_offload: _netio.COUNTERS layout changed")
cdef Py_ssize_t TX_ERRNO_BASE = _netio.TX_ERRNO_BASE
cdef Py_ssize_t RX_ERRNO_BASE = _netio.RX_ERRNO_BASE
cdef Py_ssize_t STATS_SIZE = _netio.STATS_SIZE

# the offload counter vector
cdef enum:
    O_RX_GSO = 0          # super-segments read and split
    O_RX_GSO_SEGS = 1     # segments they became
    O_RX_CSUM = 2         # non-GSO NEEDS_CSUM packets whose checksum was completed
    O_RX_VNET_BAD = 3     # vnet header inconsistent with its packet (offsets, lengths, type)
    O_RX_GSO_BAD = 4      # GSO packet whose IP/TCP headers do not hold together, or too big
    O_TX_GRO = 5          # coalesced writes
    O_TX_GRO_SEGS = 6     # segments they carried
    O_TX_GRO_FALLBACK = 7 # coalesced writes the kernel refused, then written one by one
    N_OFFLOAD_ = 8

OFFLOAD_COUNTERS = ("rx_gso", "rx_gso_segs", "rx_csum_completed", "rx_vnet_bad",
                    "rx_gso_bad", "tx_gro", "tx_gro_segs", "tx_gro_fallback")
N_OFFLOAD = N_OFFLOAD_
VNET_HDR_LEN = VNET_HDR


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
cdef inline uint32_t _rd16(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline void _wr16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline uint32_t _rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline uint32_t _le16(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8)


cdef inline void _wle16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF


cdef inline uint64_t _sum(const uint8_t *p, Py_ssize_t n, uint64_t acc) noexcept nogil:
    """RFC 1071 one's-complement sum of p[0:n] added to acc, in native byte order (load
    words as they are, store the folded result as it is: RFC 1071 2(B))."""
    cdef uint64_t w, s
    cdef uint32_t w32 = 0
    cdef uint16_t w16 = 0
    cdef uint8_t last[2]
    while n >= 8:
        memcpy(&w, p, 8)
        s = acc + w
        acc = s + (s < w)
        p += 8
        n -= 8
    if n >= 4:
        memcpy(&w32, p, 4)
        s = acc + w32
        acc = s + (s < w32)
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&w16, p, 2)
        s = acc + w16
        acc = s + (s < w16)
        p += 2
        n -= 2
    if n == 1:
        last[0] = p[0]
        last[1] = 0
        memcpy(&w16, last, 2)
        s = acc + w16
        acc = s + (s < w16)
    return acc


cdef inline uint16_t _fold(uint64_t acc) noexcept nogil:
    """64-bit native accumulator -> 16-bit one's-complement sum (native order, not inverted)."""
    acc = (acc & <uint64_t>0xFFFFFFFFU) + (acc >> 32)
    acc = (acc & <uint64_t>0xFFFFFFFFU) + (acc >> 32)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>acc


cdef inline uint64_t _pseudo(const uint8_t *ip, int v6, uint32_t l4_len) noexcept nogil:
    """Sum of the TCP pseudo-header (RFC 793 3.1 / RFC 8200 8.1) of the packet at ip."""
    cdef uint8_t tail[4]
    cdef uint64_t acc
    if v6:
        acc = _sum(ip + 8, 32, 0)
    else:
        acc = _sum(ip + 12, 8, 0)
    # (zero, protocol, length) as bytes in network order; for IPv6 the 32-bit length
    # (< 2^16 here) and next header sum to the same 16-bit words
    tail[0] = 0
    tail[1] = P_TCP
    tail[2] = (l4_len >> 8) & 0xFF
    tail[3] = l4_len & 0xFF
    return _sum(tail, 4, acc)


cdef inline void _store_csum(uint8_t *at, uint16_t v) noexcept nogil:
    memcpy(at, &v, 2)


cdef inline void _ipv4_csum(uint8_t *ip, Py_ssize_t ihl) noexcept nogil:
    ip[10] = 0
    ip[11] = 0
    _store_csum(ip + 10, <uint16_t>~_fold(_sum(ip, ihl, 0)))


cdef inline Py_ssize_t _slot_bytes(Py_ssize_t n) noexcept nogil:
    # the same arithmetic as PacketBatch.slot_bytes
    return ((HEADROOM + n + TAILROOM + SLOT_ALIGN - 1) // SLOT_ALIGN) * SLOT_ALIGN


cdef inline bint _caller_error(int e) noexcept nogil:
    return e == EBADF or e == EFAULT


# ---------------------------------------------------------------------------------------
# Slots (engine/_slots.pxd): a PacketBatch as raw pointers for the nogil loops
# ---------------------------------------------------------------------------------------
cdef inline uint8_t *_new_slot(Slots *s, Py_ssize_t n, int64_t now) noexcept nogil:
    """Append an n-byte packet slot (the caller checked _room); returns where its bytes go."""
    cdef Py_ssize_t i = s.count
    cdef Py_ssize_t start = s.used
    s.slot_start[i] = start
    s.off[i] = start + HEADROOM
    s.length[i] = n
    s.slot_end[i] = start + _slot_bytes(n)
    s.drop[i] = 0
    s.sa[i] = -1
    s.ts_ns[i] = now
    s.l2_len[i] = 0
    s.count = i + 1
    s.used = start + _slot_bytes(n)
    return s.buf + start + HEADROOM


cdef inline bint _room(Slots *s, Py_ssize_t n, Py_ssize_t limit) noexcept nogil:
    return s.count < limit and s.used + _slot_bytes(n) <= s.bufsize


cdef uint64_t *_stats(uint64_t[::1] stats, Py_ssize_t size) except NULL:
    if stats.shape[0] < size:
        raise ValueError("stats vector too small")
    return &stats[0]


# ---------------------------------------------------------------------------------------
# read side: vnet header + packet -> MSS-sized packets in slots
# ---------------------------------------------------------------------------------------
cdef struct Gso:
    Py_ssize_t n          # IP packet length (after the vnet header)
    int v6
    Py_ssize_t l4         # TCP header offset (csum_start)
    Py_ssize_t hdr        # IP + TCP header bytes
    Py_ssize_t payload    # TCP payload bytes
    Py_ssize_t mss        # gso_size
    Py_ssize_t nseg
    uint32_t seq
    uint32_t ipid
    uint8_t flags         # TCP flags of the super-segment


cdef class TsoState:
    """Per-TUN read state: the scratch buffer one read() fills, and a super-segment that
    did not fit the last batch (continued at segment `next_seg` by the next call)."""
    cdef object scratch_arr
    cdef uint8_t *scratch
    cdef Gso g
    cdef Py_ssize_t next_seg    # -1: nothing pending
    cdef readonly object offload_stats

    def __init__(self):
        self.scratch_arr = np.zeros(SCRATCH, np.uint8)
        cdef uint8_t[::1] v = self.scratch_arr
        self.scratch = &v[0]
        self.next_seg = -1
        self.offload_stats = np.zeros(N_OFFLOAD_, np.uint64)

    @property
    def pending(self) -> bool:
        """A super-segment is half emitted: call tun_read_offload again (even without a
        readiness event) to get the rest."""
        return self.next_seg != -1


cdef int _parse_gso(const uint8_t *p, Py_ssize_t n, const uint8_t *vh, Py_ssize_t max_len,
                    Gso *g) noexcept nogil:
    """Check a TCPV4/TCPV6 super-segment against its vnet header. 0 if it can be split,
    O_RX_VNET_BAD / O_RX_GSO_BAD (the counter to bump) otherwise."""
    cdef uint32_t gt = vh[1] & ~GSO_ECN
    cdef Py_ssize_t cs = _le16(vh + 6), co = _le16(vh + 8), ihl, thl
    g.mss = _le16(vh + 4)
    g.n = n
    if g.mss == 0 or co != 16 or cs + 20 > n:
        return O_RX_VNET_BAD
    if gt == GSO_TCPV4:
        if n < 20 or (p[0] >> 4) != 4:
            return O_RX_VNET_BAD
        ihl = (p[0] & 0x0F) * 4
        if ihl < 20 or ihl != cs or p[9] != P_TCP or <Py_ssize_t>_rd16(p + 2) != n:
            return O_RX_GSO_BAD
        if (_rd16(p + 6) & 0x3FFF) != 0:          # MF or a fragment offset
            return O_RX_GSO_BAD
        g.v6 = 0
        g.ipid = _rd16(p + 4)
    elif gt == GSO_TCPV6:
        if n < 40 or (p[0] >> 4) != 6:
            return O_RX_VNET_BAD
        if cs != 40 or p[6] != P_TCP or 40 + <Py_ssize_t>_rd16(p + 4) != n:
            return O_RX_GSO_BAD                     # extension headers are not split here
        g.v6 = 1
        g.ipid = 0
    else:
        return O_RX_VNET_BAD
    thl = (p[cs + 12] >> 4) * 4
    if thl < 20 or cs + thl > n:
        return O_RX_GSO_BAD
    g.l4 = cs
    g.hdr = cs + thl
    g.payload = n - g.hdr
    if g.hdr + g.mss > max_len:                  # a segment would not fit the MTU
        return O_RX_GSO_BAD
    g.nseg = (g.payload + g.mss - 1) // g.mss if g.payload > 0 else 1
    g.seq = _rd32(p + cs + 4)
    g.flags = p[cs + 13]
    return 0


cdef void _segment(const uint8_t *p, Gso *g, Py_ssize_t k, uint8_t *d) noexcept nogil:
    """Segment k of the super-segment p into d (g.hdr + its payload bytes)."""
    cdef Py_ssize_t start = k * g.mss
    cdef Py_ssize_t plen = min(g.mss, g.payload - start) if g.payload > 0 else 0
    cdef Py_ssize_t seglen = g.hdr + plen
    cdef uint8_t *th = d + g.l4
    cdef uint8_t fl = g.flags
    cdef uint16_t c
    memcpy(d, p, g.hdr)
    if plen > 0:
        memcpy(d + g.hdr, p + g.hdr + start, plen)
    if g.v6:
        _wr16(d + 4, <uint32_t>(seglen - 40))
    else:
        _wr16(d + 2, <uint32_t>seglen)
        _wr16(d + 4, (g.ipid + <uint32_t>k) & 0xFFFF)
        _ipv4_csum(d, g.l4)
    _wr32(th + 4, g.seq + <uint32_t>start)
    if k > 0:
        fl &= ~TCP_CWR
    if k < g.nseg - 1:
        fl &= ~(TCP_FIN | TCP_PSH)
    th[13] = fl
    th[16] = 0
    th[17] = 0
    c = ~_fold(_sum(th, seglen - g.l4, _pseudo(d, g.v6, <uint32_t>(seglen - g.l4))))
    _store_csum(th + 16, c)


cdef int _complete_csum(uint8_t *p, Py_ssize_t n, const uint8_t *vh) noexcept nogil:
    """NEEDS_CSUM on a non-GSO packet: sum from csum_start (the field holds the pseudo-header
    sum), store the complement at csum_start + csum_offset. -1 if the offsets do not fit."""
    cdef Py_ssize_t cs = _le16(vh + 6), co = _le16(vh + 8)
    cdef uint16_t c
    if cs >= n or co + 2 > n - cs:
        return -1
    c = ~_fold(_sum(p + cs, n - cs, 0))
    if c == 0:
        c = 0xFFFF                      # CSUM_MANGLED_0, as skb_checksum_help writes
    _store_csum(p + cs + co, c)
    return 0


cdef void _drain(TsoState st, Slots *s, uint64_t *stats, uint64_t *ostats,
                 Py_ssize_t limit, int64_t now) noexcept nogil:
    """Emit segments of the pending super-segment while the batch has room."""
    cdef const uint8_t *p = st.scratch + VNET_HDR
    cdef Py_ssize_t k, plen
    cdef uint8_t *d
    while st.next_seg >= 0:
        k = st.next_seg
        plen = min(st.g.mss, st.g.payload - k * st.g.mss) if st.g.payload > 0 else 0
        if not _room(s, st.g.hdr + plen, limit):
            return
        d = _new_slot(s, st.g.hdr + plen, now)
        _segment(p, &st.g, k, d)
        stats[S_RX_PACKETS] += 1
        stats[S_RX_BYTES] += st.g.hdr + plen
        ostats[O_RX_GSO_SEGS] += 1
        st.next_seg = k + 1 if k + 1 < st.g.nseg else -1


cdef int _take(TsoState st, Py_ssize_t r, Slots *s, uint64_t *stats, uint64_t *ostats,
               Py_ssize_t max_len, Py_ssize_t limit, int64_t now) noexcept nogil:
    """Handle the r bytes one read() put in st.scratch. Returns 1 if the packet could not be
    placed for lack of room (only for a non-GSO packet: it is then kept as pending)."""
    cdef uint8_t *vh = st.scratch
    cdef uint8_t *p = st.scratch + VNET_HDR
    cdef Py_ssize_t n = r - VNET_HDR
    cdef int why
    if n < 1:
        ostats[O_RX_VNET_BAD] += 1
        return 0
    if (vh[1] & ~GSO_ECN) == GSO_NONE:
        if n > max_len:
            stats[S_RX_TRUNCATED] += 1
            return 0
        if vh[0] & F_NEEDS_CSUM:
            if _complete_csum(p, n, vh) < 0:
                ostats[O_RX_VNET_BAD] += 1
                return 0
            ostats[O_RX_CSUM] += 1
        # a one-segment "super-segment" of the whole packet: reuse the pending path
        st.g.n = n
        st.g.hdr = n
        st.g.payload = 0
        st.g.nseg = 1
        st.g.mss = 0
        if not _room(s, n, limit):
            st.next_seg = -2                # pending raw packet, see _drain_raw
            return 1
        memcpy(_new_slot(s, n, now), p, n)
        stats[S_RX_PACKETS] += 1
        stats[S_RX_BYTES] += n
        return 0
    why = _parse_gso(p, n, vh, max_len, &st.g)
    if why:
        ostats[why] += 1
        return 0
    ostats[O_RX_GSO] += 1
    st.next_seg = 0
    _drain(st, s, stats, ostats, limit, now)
    return 1 if st.next_seg >= 0 else 0


cdef inline void _drain_raw(TsoState st, Slots *s, uint64_t *stats, Py_ssize_t limit,
                            int64_t now) noexcept nogil:
    if st.next_seg == -2 and _room(s, st.g.n, limit):
        memcpy(_new_slot(s, st.g.n, now), st.scratch + VNET_HDR, st.g.n)
        stats[S_RX_PACKETS] += 1
        stats[S_RX_BYTES] += st.g.n
        st.next_seg = -1


def tun_read_offload(int fd, batch, uint64_t[::1] stats, TsoState state not None,
                     int max_len=2048, int max_packets=0):
    """read() from a nonblocking IFF_VNET_HDR TUN into `batch` (appended) until EAGAIN, the
    batch is full (capacity, byte budget) or max_packets; super-segments are split (see the
    module doc). max_len is the device MTU. A super-segment cut short by a full batch stays
    in `state` (state.pending) and is continued first by the next call. Returns the packets
    added."""
    cdef Slots s
    cdef uint64_t *st = _stats(stats, STATS_SIZE)
    cdef uint64_t *ost
    cdef uint64_t[::1] ov = state.offload_stats
    cdef Py_ssize_t limit, first
    cdef ssize_t r
    cdef int err = 0
    cdef int64_t now
    if max_len < 68 or max_len > MAX_IP:
        raise ValueError("max_len must be 68..65535")
    ost = &ov[0]
    _slots(batch, &s)
    first = s.count
    limit = s.capacity if max_packets <= 0 else min(s.capacity, s.count + max_packets)
    with nogil:
        now = _now_ns()
        if state.next_seg >= 0:
            _drain(state, &s, st, ost, limit, now)
        elif state.next_seg == -2:
            _drain_raw(state, &s, st, limit, now)
        while state.next_seg == -1 and s.count < limit:
            r = _read_counted(fd, state.scratch, SCRATCH, st, S_RX_ERRORS, RX_ERRNO_BASE)
            if r <= 0:
                err = <int>-r
                break
            if r > VNET_HDR + MAX_IP:
                st[S_RX_TRUNCATED] += 1
                continue
            _take(state, r, &s, st, ost, max_len, limit, now)
    batch.count = s.count
    batch.used = s.used
    if err and (err == EBADF or err == EFAULT or err == EINVAL) and s.count == first:
        raise OSError(err, "TUN read failed")
    return s.count - first


def tso_feed(data, batch, uint64_t[::1] stats, TsoState state not None, int max_len=2048,
             int max_packets=0):
    """What tun_read_offload does with one read() that returned `data` (vnet header +
    packet), for tests and tools: the packet is split into `batch` (appended; a rest that
    does not fit stays pending: call tso_feed(b"", ...) to continue). Returns packets
    added."""
    cdef const uint8_t[::1] v = data
    cdef Slots s
    cdef uint64_t *st = _stats(stats, STATS_SIZE)
    cdef uint64_t[::1] ov = state.offload_stats
    cdef Py_ssize_t limit, first, r = v.shape[0]
    cdef int64_t now
    if max_len < 68 or max_len > MAX_IP:
        raise ValueError("max_len must be 68..65535")
    if r > VNET_HDR + MAX_IP:
        raise ValueError("larger than one TUN read")
    _slots(batch, &s)
    first = s.count
    limit = s.capacity if max_packets <= 0 else min(s.capacity, s.count + max_packets)
    now = _now_ns()
    if state.next_seg >= 0:
        _drain(state, &s, st, &ov[0], limit, now)
    elif state.next_seg == -2:
        _drain_raw(state, &s, st, limit, now)
    elif r > 0:
        memcpy(state.scratch, &v[0], r)
        _take(state, r, &s, st, &ov[0], max_len, limit, now)
    batch.count = s.count
    batch.used = s.used
    return s.count - first


# ---------------------------------------------------------------------------------------
# write side: runs of in-order TCP segments -> one GSO packet
# ---------------------------------------------------------------------------------------
cdef struct Seg:
    Py_ssize_t o          # offset of the IP packet in buf
    Py_ssize_t n          # its length (== IP total length)
    int v6
    Py_ssize_t l4         # IP header length
    Py_ssize_t thl        # TCP header length
    Py_ssize_t payload
    uint32_t seq
    uint8_t flags


cdef int _tcp_seg(const uint8_t *buf, Py_ssize_t o, Py_ssize_t n, Seg *g) noexcept nogil:
    """1 if [o, o + n) is a TCP segment that may take part in coalescing (see the module
    doc: no IPv4 options or fragments, no IPv6 extension headers, ACK or ACK|PSH, payload,
    valid checksums), else 0."""
    cdef const uint8_t *p = buf + o
    cdef const uint8_t *th
    cdef Py_ssize_t l4
    if n < 40:
        return 0
    if (p[0] >> 4) == 4:
        if p[0] != 0x45 or p[9] != P_TCP or <Py_ssize_t>_rd16(p + 2) != n:
            return 0
        if (_rd16(p + 6) & 0x3FFF) != 0 or _fold(_sum(p, 20, 0)) != 0xFFFF:
            return 0
        g.v6 = 0
        l4 = 20
    elif (p[0] >> 4) == 6:
        if n < 60 or p[6] != P_TCP or 40 + <Py_ssize_t>_rd16(p + 4) != n:
            return 0
        g.v6 = 1
        l4 = 40
    else:
        return 0
    th = p + l4
    g.thl = (th[12] >> 4) * 4
    if g.thl < 20 or l4 + g.thl >= n:              # no payload: nothing to coalesce
        return 0
    if th[13] != TCP_ACK and th[13] != (TCP_ACK | TCP_PSH):
        return 0
    if _fold(_sum(th, n - l4, _pseudo(p, g.v6, <uint32_t>(n - l4)))) != 0xFFFF:
        return 0                                  # the kernel is to drop it, not us
    g.o = o
    g.n = n
    g.l4 = l4
    g.payload = n - l4 - g.thl
    g.seq = _rd32(th + 4)
    g.flags = th[13]
    return 1


cdef inline bint _same_flow(const uint8_t *buf, Seg *a, Seg *b) noexcept nogil:
    """b continues a's flow with the same headers but length / ID / checksums / seq / PSH."""
    cdef const uint8_t *p = buf + a.o
    cdef const uint8_t *q = buf + b.o
    if a.v6 != b.v6 or a.thl != b.thl:
        return False
    if a.v6:
        if memcmp(p, q, 4) != 0 or memcmp(p + 6, q + 6, 34) != 0:
            return False
    else:
        if p[1] != q[1] or memcmp(p + 6, q + 6, 4) != 0 or memcmp(p + 12, q + 12, 8) != 0:
            return False
    p += a.l4
    q += b.l4
    # ports, ack number, data offset, window, urgent pointer, options (not seq, flags,
    # checksum)
    return (memcmp(p, q, 4) == 0 and memcmp(p + 8, q + 8, 5) == 0
            and memcmp(p + 14, q + 14, 2) == 0 and memcmp(p + 18, q + 18, a.thl - 18) == 0)


cdef int _write_one(int fd, const uint8_t *pkt, Py_ssize_t n, uint64_t *stats,
                    int *fatal) noexcept nogil:
    cdef uint8_t zero[VNET_HDR]
    cdef iovec iov[2]
    cdef ssize_t r
    cdef int e
    memset(zero, 0, VNET_HDR)
    iov[0].iov_base = zero
    iov[0].iov_len = VNET_HDR
    iov[1].iov_base = <void *>pkt
    iov[1].iov_len = n
    while True:
        r = writev(fd, iov, 2)
        if r >= 0:
            stats[S_TX_PACKETS] += 1
            stats[S_TX_BYTES] += r - VNET_HDR if r > VNET_HDR else 0
            return 1
        e = errno
        if e != EINTR:
            break
    stats[S_TX_ERRORS] += 1
    _count_errno(stats, TX_ERRNO_BASE, e)
    if _caller_error(e):
        fatal[0] = e
    return 0


cdef int _write_group(int fd, uint8_t *buf, Seg *segs, int ns, uint64_t *stats,
                      uint64_t *ostats, int *fatal) noexcept nogil:
    """One GSO write of segs[0..ns) (ns >= 2). Returns segments delivered."""
    cdef Seg *a = &segs[0]
    cdef uint8_t *p = buf + a.o
    cdef uint8_t *th = p + a.l4
    cdef uint8_t saved[120]
    cdef uint8_t vh[VNET_HDR]
    cdef iovec iov[GRO_MAX_SEGS + 2]
    cdef Py_ssize_t total = a.n, hl = a.l4 + a.thl
    cdef int k, e, done = 0
    cdef ssize_t r
    for k in range(1, ns):
        total += segs[k].payload
    memcpy(saved, p, hl)
    if a.v6:
        _wr16(p + 4, <uint32_t>(total - 40))
    else:
        _wr16(p + 2, <uint32_t>total)
        _ipv4_csum(p, 20)
    th[13] = segs[ns - 1].flags
    th[16] = 0
    th[17] = 0
    _store_csum(th + 16, _fold(_pseudo(p, a.v6, <uint32_t>(total - a.l4))))
    vh[0] = F_NEEDS_CSUM
    vh[1] = GSO_TCPV6 if a.v6 else GSO_TCPV4
    _wle16(vh + 2, <uint32_t>hl)
    _wle16(vh + 4, <uint32_t>a.payload)
    _wle16(vh + 6, <uint32_t>a.l4)
    _wle16(vh + 8, 16)
    iov[0].iov_base = vh
    iov[0].iov_len = VNET_HDR
    iov[1].iov_base = p
    iov[1].iov_len = a.n
    for k in range(1, ns):
        iov[k + 1].iov_base = buf + segs[k].o + segs[k].l4 + segs[k].thl
        iov[k + 1].iov_len = segs[k].payload
    while True:
        r = writev(fd, iov, ns + 1)
        if r >= 0:
            stats[S_TX_PACKETS] += ns
            stats[S_TX_BYTES] += total
            ostats[O_TX_GRO] += 1
            ostats[O_TX_GRO_SEGS] += ns
            return ns
        e = errno
        if e != EINTR:
            break
    memcpy(p, saved, hl)                   # the segments as they were
    if _caller_error(e):
        stats[S_TX_ERRORS] += 1
        _count_errno(stats, TX_ERRNO_BASE, e)
        fatal[0] = e
        return 0
    if e == EAGAIN or e == ENOBUFS:
        stats[S_TX_ERRORS] += ns
        stats[TX_ERRNO_BASE + e] += ns
        return 0
    ostats[O_TX_GRO_FALLBACK] += 1       # refused as GSO (EINVAL, ...): one by one
    for k in range(ns):
        if fatal[0]:
            break
        done += _write_one(fd, buf + segs[k].o, segs[k].n, stats, fatal)
    return done


def tun_write_offload(int fd, batch, uint64_t[::1] stats, uint64_t[::1] offload_stats,
                      bint gro=True):
    """write() every packet with drop == 0 to an IFF_VNET_HDR TUN fd, runs of in-order TCP
    segments of one flow coalesced into one GSO packet when `gro` (see the module doc).
    Rewrites the first segment's IP/TCP header of each coalesced run in batch.buf.
    Failures are counted by errno. Returns the packets (segments) the kernel took."""
    cdef Slots s
    cdef uint64_t *st = _stats(stats, STATS_SIZE)
    cdef uint64_t *ost = _stats(offload_stats, N_OFFLOAD_)
    cdef Seg segs[GRO_MAX_SEGS]
    cdef Seg nxt
    cdef Py_ssize_t i, j, o, ln, total
    cdef int ns, fatal = 0, sent = 0, have_nxt
    _slots(batch, &s)
    with nogil:
        i = 0
        have_nxt = 0
        while i < s.count and not fatal:
            o = s.off[i]
            ln = s.length[i]
            if s.drop[i] != 0:
                i += 1
                continue
            if o < 0 or ln < 1 or o > s.bufsize or ln > s.bufsize - o or ln > MAX_IP:
                st[S_TX_MALFORMED] += 1
                i += 1
                continue
            if not gro or not (have_nxt or _tcp_seg(s.buf, o, ln, &segs[0])):
                have_nxt = 0
                sent += _write_one(fd, s.buf + o, ln, st, &fatal)
                i += 1
                continue
            if have_nxt:
                segs[0] = nxt
                have_nxt = 0
            ns = 1
            total = segs[0].n
            j = i + 1
            while (j < s.count and ns < GRO_MAX_SEGS and not (segs[ns - 1].flags & TCP_PSH)
                   and segs[ns - 1].payload == segs[0].payload):
                if s.drop[j] != 0:
                    j += 1
                    continue
                o = s.off[j]
                ln = s.length[j]
                if o < 0 or ln < 1 or o > s.bufsize or ln > s.bufsize - o or ln > MAX_IP:
                    break                       # the outer loop counts it
                if not _tcp_seg(s.buf, o, ln, &nxt):
                    break
                have_nxt = 1                    # parsed: the next group may start with it
                if (not _same_flow(s.buf, &segs[0], &nxt)
                        or nxt.seq != segs[ns - 1].seq + <uint32_t>segs[ns - 1].payload
                        or nxt.payload > segs[0].payload
                        or total + nxt.payload > MAX_IP):
                    break
                segs[ns] = nxt
                have_nxt = 0
                total += nxt.payload
                ns += 1
                j += 1
            if ns == 1:
                sent += _write_one(fd, s.buf + segs[0].o, segs[0].n, st, &fatal)
            else:
                sent += _write_group(fd, s.buf, segs, ns, st, ost, &fatal)
            # drops between the run's members were skipped; resume at the first not taken
            i = j
    if fatal:
        raise OSError(fatal, "TUN write failed")
    return sent


def gro_plan(batch):
    """For tests: the runs tun_write_offload would coalesce, as lists of packet indices
    (single packets included), without writing anything or changing the batch."""
    cdef Slots s
    cdef Seg a, b, last
    cdef Py_ssize_t i, j, total
    _slots(batch, &s)
    runs = []
    i = 0
    while i < s.count:
        if s.drop[i] != 0:
            i += 1
            continue
        o, ln = s.off[i], s.length[i]
        if o < 0 or ln < 1 or o > s.bufsize or ln > s.bufsize - o or ln > MAX_IP \
                or not _tcp_seg(s.buf, o, ln, &a):
            runs.append([i])
            i += 1
            continue
        run = [i]
        last = a
        total = a.n
        j = i + 1
        while j < s.count and len(run) < GRO_MAX_SEGS and not (last.flags & TCP_PSH) \
                and last.payload == a.payload:
            if s.drop[j] != 0:
                j += 1
                continue
            o, ln = s.off[j], s.length[j]
            if o < 0 or ln < 1 or o > s.bufsize or ln > s.bufsize - o or ln > MAX_IP \
                    or not _tcp_seg(s.buf, o, ln, &b):
                break
            if (not _same_flow(s.buf, &a, &b) or b.seq != last.seq + <uint32_t>last.payload
                    or b.payload > a.payload or total + b.payload > MAX_IP):
                break
            run.append(j)
            last = b
            total += b.payload
            j += 1
        runs.append(run)
        i = j
    return runs
