"""Numba helpers for IPv4/IPv6 header work shared by the ESP and AH kernels.

All functions take the batch buffer and absolute offsets, check bounds explicitly (the
kernels run with Numba's bounds checks off), and return status codes instead of raising.
"""
from __future__ import annotations

import numba as nb
import numpy as np

# IP protocol numbers (IANA)
P_HOPOPT = 0
P_ICMP = 1
P_IPV4 = 4
P_TCP = 6
P_UDP = 17
P_IPV6 = 41
P_ROUTING = 43
P_FRAGMENT = 44
P_ESP = 50
P_AH = 51
P_ICMPV6 = 58
P_NONE = 59
P_DSTOPTS = 60

MAX_EXT_HEADERS = 8   # bound on the IPv6 extension-header walk

#: njit options of every data-path kernel and helper (kernels_ip, kernels_esp, kernels_ah).
#: `_nrt=False` compiles without Numba's reference counting: the kernels allocate nothing
#: (an allocation becomes a compile error), and with it on, every array an inlined helper
#: receives costs an atomic incref/decref pair per packet, which was half of finish_decrypt's
#: time at 64 bytes. The option is Numba's own (numba.core.options), with a leading
#: underscore; tests/test_engine_fastpaths.py checks that it still takes effect.
JIT = {"cache": True, "_nrt": False}


# Byte access by unsigned index. Numba turns a signed index into "if i < 0: i += len"
# before every load and store (Python's negative indexing); an unsigned one is used as it
# is. The callers bounds-check every offset first (a negative one would be a bug either
# way: past the end here, wrapped to the buffer's tail before). This made the hot byte
# loops (the IPv4 header checksum) 2x faster. Mind Numba's typing: uint64 + int64 is float64, so
# offsets are added as uint64 constants (_U1.._U3) or converted first.
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)


@nb.njit(inline="always", **JIT)
def rd8(buf, o):
    return np.int64(buf[np.uint64(o)])


@nb.njit(inline="always", **JIT)
def rd16(buf, o):
    u = np.uint64(o)
    return (np.int64(buf[u]) << 8) | np.int64(buf[u + _U1])


@nb.njit(inline="always", **JIT)
def rd32(buf, o):
    u = np.uint64(o)
    return ((np.int64(buf[u]) << 24) | (np.int64(buf[u + _U1]) << 16)
            | (np.int64(buf[u + _U2]) << 8) | np.int64(buf[u + _U3]))


@nb.njit(inline="always", **JIT)
def wr8(buf, o, v):
    buf[np.uint64(o)] = v


@nb.njit(inline="always", **JIT)
def wr16(buf, o, v):
    u = np.uint64(o)
    buf[u] = (v >> 8) & 0xFF
    buf[u + _U1] = v & 0xFF


@nb.njit(inline="always", **JIT)
def wr32(buf, o, v):
    u = np.uint64(o)
    buf[u] = (v >> 24) & 0xFF
    buf[u + _U1] = (v >> 16) & 0xFF
    buf[u + _U2] = (v >> 8) & 0xFF
    buf[u + _U3] = v & 0xFF


@nb.njit(**JIT)
def csum_add(buf, o, n, acc):
    """Add n bytes at o to a one's-complement accumulator (RFC 1071)."""
    i = 0
    while i + 1 < n:
        acc += rd16(buf, o + i)
        i += 2
    if i < n:
        acc += rd8(buf, o + i) << 8
    return acc


@nb.njit(inline="always", **JIT)
def csum_fold(acc):
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF


@nb.njit(**JIT)
def ipv4_set_checksum(buf, o, ihl):
    buf[o + 10] = 0
    buf[o + 11] = 0
    wr16(buf, o + 10, csum_fold(csum_add(buf, o, ihl, np.int64(0))))


@nb.njit(**JIT)
def ipv4_checksum_ok(buf, o, ihl):
    return csum_fold(ipv4_sum(buf, o, ihl)) == 0


@nb.njit(inline="always", **JIT)
def ipv4_sum(buf, o, ihl):
    """The unfolded one's-complement sum of the IPv4 header at o (ihl: a multiple of 4):
    csum_add for the hot paths, inlined and without its odd-length tail."""
    acc = np.int64(0)
    for j in range(0, ihl, 2):
        acc += rd16(buf, o + j)
    return acc


@nb.njit(inline="always", **JIT)
def parse_ip(buf, o, avail):
    """Validate an IP header at o with `avail` captured bytes.

    Returns (ok, version, hdr_len, total_len, proto, l4_off, nh_field_off):
    total_len is the IP-declared length (<= avail; trailers beyond it are ignored);
    for IPv6 the extension headers HOPOPT/ROUTING/DSTOPTS are walked, hdr_len covers them,
    proto is the first other next-header and nh_field_off the byte that names it.
    IPv4 fragments and IPv6 fragment headers are reported as ok=False: the data path
    does not reassemble.
    """
    if avail < 1:
        return False, 0, 0, 0, 0, 0, 0
    ver = rd8(buf, o) >> 4
    if ver == 4:
        if avail < 20:
            return False, 4, 0, 0, 0, 0, 0
        ihl = (rd8(buf, o) & 0x0F) * 4
        tot = rd16(buf, o + 2)
        if ihl < 20 or tot < ihl or tot > avail:
            return False, 4, 0, 0, 0, 0, 0
        frag = rd16(buf, o + 6)
        if (frag & 0x3FFF) != 0:   # MF set or non-zero offset
            return False, 4, 0, 0, 0, 0, 0
        return True, 4, ihl, tot, rd8(buf, o + 9), o + ihl, o + 9
    if ver == 6:
        if avail < 40:
            return False, 6, 0, 0, 0, 0, 0
        tot = 40 + rd16(buf, o + 4)
        if tot > avail:
            return False, 6, 0, 0, 0, 0, 0
        nh = rd8(buf, o + 6)
        nh_off = o + 6
        p = o + 40
        end = o + tot
        k = 0
        while nh == P_HOPOPT or nh == P_ROUTING or nh == P_DSTOPTS or nh == P_FRAGMENT:
            if nh == P_FRAGMENT or k >= MAX_EXT_HEADERS or p + 8 > end:
                return False, 6, 0, 0, 0, 0, 0
            hl = (rd8(buf, p + 1) + 1) * 8
            if p + hl > end:
                return False, 6, 0, 0, 0, 0, 0
            nh_off = p
            nh = rd8(buf, p)
            p += hl
            k += 1
        return True, 6, p - o, tot, nh, p, nh_off
    return False, np.int64(ver), 0, 0, 0, 0, 0


@nb.njit(inline="always", **JIT)
def ports_of(buf, l4, end, proto):
    """(sport, dport) of a TCP/UDP header at l4, or (0, 0) when absent or truncated."""
    if (proto == P_TCP or proto == P_UDP) and l4 + 4 <= end:
        return rd16(buf, l4), rd16(buf, l4 + 2)
    return np.int64(0), np.int64(0)


@nb.njit(inline="always", **JIT)
def ecn_of(buf, o):
    """The ECN field (RFC 3168) of the IP header at o."""
    if (rd8(buf, o) >> 4) == 4:
        return rd8(buf, o + 1) & 3
    return (rd8(buf, o + 1) >> 4) & 3


@nb.njit(inline="always", **JIT)
def dscp_of(buf, o):
    if (rd8(buf, o) >> 4) == 4:
        return rd8(buf, o + 1) >> 2
    return ((rd8(buf, o) & 0x0F) << 2) | (rd8(buf, o + 1) >> 6)


@nb.njit(inline="always", **JIT)
def set_ecn(buf, o, ecn):
    """Rewrite the ECN field of the IP header at o (IPv4 checksum updated)."""
    if (buf[o] >> 4) == 4:
        buf[o + 1] = (buf[o + 1] & 0xFC) | ecn
        ipv4_set_checksum(buf, o, np.int64(buf[o] & 0x0F) * 4)
    else:
        buf[o + 1] = (buf[o + 1] & 0xCF) | (ecn << 4)


@nb.njit(**JIT)
def move_bytes(buf, dst, src, n):
    """memmove within buf."""
    d = np.uint64(dst)
    s = np.uint64(src)
    if dst < src:
        for k in range(n):
            buf[d + np.uint64(k)] = buf[s + np.uint64(k)]
    elif dst > src:
        for k in range(n - 1, -1, -1):
            buf[d + np.uint64(k)] = buf[s + np.uint64(k)]
