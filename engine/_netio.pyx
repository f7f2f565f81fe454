# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batched packet I/O straight into and out of PacketBatch slots (engine/batch.py).

One call moves a whole batch with the GIL released once: TUN read()/write() loops, and
recvmmsg()/sendmmsg() on ESP-in-UDP (RFC 3948) and raw ESP sockets. Nothing here allocates
per packet or takes the GIL per packet. engine/netio.py wraps these functions in objects.

Receive functions append packets at `batch.count`, each at slot_start + HEADROOM exactly as
PacketBatch.add does, and leave them ready for Engine.decrypt / Engine.encrypt:
- udp_recv writes a synthetic outer IPv4/IPv6 + UDP header in the headroom in front of each
  datagram (src = sender, dst = our address, the real ports, the received TOS/traffic
  class so RFC 6040 ECN decapsulation sees CE marks). The UDP checksum field is 0: the
  kernel verified the real one, and the engine does not check it on decrypt.
- Datagrams that are not ESP never enter the batch (RFC 3948 2.2): a NAT keepalive (one
  0xFF byte) is only counted; an IKE message (non-ESP marker: 4 zero bytes) is recorded in
  RxMeta.ctl as (offset, length) of the IKE message after the marker, with its sender, so
  the caller can copy it out before the batch is reused.
- A packet larger than `max_len` is truncated by the kernel and counted (rx_truncated),
  never written past its slot and never added.

Send functions only read the batch: every packet with drop == 0 is parsed (outer IPv4 or
IPv6 header, then UDP for udp_send / the protocol for esp_raw_send); a packet whose headers
do not hold together is counted under tx_malformed and not sent. Socket errors are counted
per errno (EAGAIN / ENOBUFS included), never raised; only errors that mean the caller
passed a bad descriptor (EBADF, ENOTSOCK, EFAULT, EINVAL) raise OSError.

Counters live in one uint64 array (`stats`, STATS_SIZE entries): COUNTERS names the first
N_COUNTERS; TX_ERRNO_BASE + errno and RX_ERRNO_BASE + errno count errors by errno.
"""
import os

import numpy as np

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

from engine._libc_net cimport *
from engine._netio_hdr cimport *
from engine._slots cimport (Slots, _slots, _now_ns, ERRNO_SLOTS, _count_errno,
                           _read_counted)

from engine.batch import HEADROOM as _HEADROOM, SLOT_ALIGN as _SLOT_ALIGN, \
    TAILROOM as _TAILROOM

cdef Py_ssize_t HEADROOM = _HEADROOM
cdef Py_ssize_t TAILROOM = _TAILROOM
cdef Py_ssize_t SLOT_ALIGN = _SLOT_ALIGN

# Counter indices in `stats` (COUNTERS below names them in this order).
cdef enum:
    S_RX_PACKETS = 0      # packets added to a batch
    S_RX_BYTES = 1        # their bytes as received (without synthesized headers)
    S_TX_PACKETS = 2
    S_TX_BYTES = 3        # bytes handed to the kernel (UDP/ESP payload, or IP packet on TUN)
    S_RX_TRUNCATED = 4    # larger than max_len: truncated by the kernel, not added
    S_RX_IKE = 5          # non-ESP marker datagrams handed to the caller (RxMeta.ctl)
    S_RX_KEEPALIVE = 6    # RFC 3948 NAT keepalives
    S_RX_CTL_OVERFLOW = 7 # IKE datagrams that found RxMeta.ctl full: dropped
    S_RX_MALFORMED = 8    # datagrams from an unexpected address family
    S_TX_MALFORMED = 9    # packets whose outer headers do not parse (or bad offsets): not sent
    S_TX_ERRORS = 10      # packets the kernel refused (by errno at TX_ERRNO_BASE)
    S_RX_ERRORS = 11      # receive calls that failed (by errno at RX_ERRNO_BASE)
    N_COUNTERS_ = 12
    TX_ERRNO_BASE_ = N_COUNTERS_
    RX_ERRNO_BASE_ = N_COUNTERS_ + ERRNO_SLOTS
    STATS_SIZE_ = N_COUNTERS_ + 2 * ERRNO_SLOTS

COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_truncated", "rx_ike",
            "rx_keepalive", "rx_ctl_overflow", "rx_malformed", "tx_malformed", "tx_errors",
            "rx_errors")
N_COUNTERS = N_COUNTERS_
TX_ERRNO_BASE = TX_ERRNO_BASE_
RX_ERRNO_BASE = RX_ERRNO_BASE_
STATS_SIZE = STATS_SIZE_

cdef enum:
    MAX_VLEN = 1024       # UIO_MAXIOV: the most messages one recvmmsg/sendmmsg takes
    CTRL_SPACE = 64       # ancillary bytes per message (TOS / traffic class, UDP_SEGMENT)
    SOL_UDP_ = 17         # linux/udp.h
    UDP_SEGMENT_ = 103
    GSO_MAX_SEGS = 64     # UDP_MAX_SEGMENTS of older kernels
    GSO_MAX_BYTES = 65000 # one IP datagram's worth of payload
    ERR_NOMEM = -1        # _recv's allocation failure (errno values are positive)


cdef inline bint _caller_error(int e) noexcept nogil:
    """errnos that mean the caller passed something that is not an open socket / TUN fd."""
    return e == EBADF or e == ENOTSOCK or e == EFAULT or e == EINVAL


cdef inline Py_ssize_t _slot_bytes(Py_ssize_t n) noexcept nogil:
    # the same arithmetic as PacketBatch.slot_bytes / kernels_batch.place_packets
    return ((HEADROOM + n + TAILROOM + SLOT_ALIGN - 1) // SLOT_ALIGN) * SLOT_ALIGN


cdef object _oserror(int e):
    return OSError(e, os.strerror(e))


# ---------------------------------------------------------------------------------------
# Slots (engine/_slots.pxd): a PacketBatch as raw pointers for the nogil loops
# ---------------------------------------------------------------------------------------
cdef inline void _place(Slots *s, Py_ssize_t start, Py_ssize_t o, Py_ssize_t n,
                        Py_ssize_t end, int64_t now) noexcept nogil:
    """Append packet [o, o + n) of the slot [start, end) as a fresh, undropped packet."""
    cdef Py_ssize_t i = s.count
    s.slot_start[i] = start
    s.off[i] = o
    s.length[i] = n
    s.slot_end[i] = end
    s.drop[i] = 0
    s.sa[i] = -1
    s.ts_ns[i] = now
    s.l2_len[i] = 0
    s.count = i + 1


cdef uint64_t *_stats(uint64_t[::1] stats) except NULL:
    if stats.shape[0] < STATS_SIZE_:
        raise ValueError("stats must have STATS_SIZE entries")
    return &stats[0]


cdef inline int _family_of(bytes local_ip) except -1:
    if len(local_ip) == 4:
        return AF_INET
    if len(local_ip) == 16:
        return AF_INET6
    raise ValueError("local_ip must be 4 (IPv4) or 16 (IPv6) packed bytes")


cdef class RxMeta:
    """Side data of the receive calls, kept apart from the packets.

    peer[i]      sender of batch packet i (PEER_BYTES: address, then port, big endian)
    ctl[k]       (offset in batch.buf, length) of the k-th IKE message of the last call,
                 after its non-ESP marker; ctl_peer[k] its sender; n_ctl how many.
    The IKE bytes sit in batch.buf outside every packet's slot: copy them out before the
    batch is cleared or received into again.
    """
    cdef readonly object peer
    cdef readonly object ctl
    cdef readonly object ctl_peer
    cdef public int n_ctl

    def __init__(self, int capacity, int ctl_capacity=64):
        if capacity <= 0 or ctl_capacity <= 0:
            raise ValueError("RxMeta capacities must be positive")
        self.peer = np.zeros((capacity, PEER_BYTES), np.uint8)
        self.ctl = np.zeros((ctl_capacity, 2), np.int64)
        self.ctl_peer = np.zeros((ctl_capacity, PEER_BYTES), np.uint8)
        self.n_ctl = 0


# ---------------------------------------------------------------------------------------
# receive: recvmmsg into slots (ESP-in-UDP and raw)
# ---------------------------------------------------------------------------------------
cdef struct RxArgs:
    int udp               # 1: ESP-in-UDP (synthesize IP + UDP, demux); 0: raw IP protocol
    int family
    int proto             # raw: the IP protocol (next header of a synthesized IPv6 header)
    const uint8_t *me     # our address (4 or 16 bytes)
    uint8_t lport[2]      # our UDP port, big endian
    uint8_t *peer         # RxMeta.peer rows, capacity of the batch or more
    int64_t *ctl          # RxMeta.ctl rows (offset, length)
    uint8_t *ctl_peer
    int ctl_cap
    int n_ctl
    Py_ssize_t max_len


cdef int _recv(int fd, Slots *s, RxArgs *a, uint64_t *stats, int vlen) noexcept nogil:
    """One recvmmsg of up to vlen datagrams, each into its own slot of _slot_bytes(max_len
    + 1) bytes from s.used on (the caller checked they fit); then, in order, drop the
    truncated ones, hand IKE/keepalives aside (UDP) and append the rest. Returns 0 or the
    errno of a failed call (EAGAIN included), ERR_NOMEM if scratch could not be had."""
    cdef mmsghdr *vec = <mmsghdr *>calloc(vlen, sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>calloc(vlen, sizeof(iovec))
    cdef sockaddr_in6 *names = <sockaddr_in6 *>calloc(vlen, sizeof(sockaddr_in6))
    cdef uint8_t *ctrl = <uint8_t *>calloc(vlen, CTRL_SPACE)
    cdef Py_ssize_t slot = _slot_bytes(a.max_len + 1)
    cdef Py_ssize_t hdr, start, pos, n
    cdef int k, got, err = 0, tos
    cdef uint8_t *p
    cdef uint8_t *h
    cdef uint8_t *who
    cdef int64_t now
    if vec == NULL or iov == NULL or names == NULL or ctrl == NULL:
        free(vec); free(iov); free(names); free(ctrl)
        return ERR_NOMEM
    for k in range(vlen):
        # max_len + 1 bytes: one spare byte (inside TAILROOM) shows a too-long datagram
        # even where the kernel reports only the bytes it copied
        iov[k].iov_base = s.buf + s.used + k * slot + HEADROOM
        iov[k].iov_len = a.max_len + 1
        vec[k].msg_hdr.msg_name = &names[k]
        vec[k].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        vec[k].msg_hdr.msg_iov = &iov[k]
        vec[k].msg_hdr.msg_iovlen = 1
        vec[k].msg_hdr.msg_control = ctrl + k * CTRL_SPACE
        vec[k].msg_hdr.msg_controllen = CTRL_SPACE
    while True:
        got = recvmmsg(fd, vec, vlen, MSG_DONTWAIT | MSG_TRUNC, NULL)
        if got >= 0 or errno != EINTR:
            break
    if got < 0:
        err = errno
        got = 0
    if a.udp:
        hdr = (IPV4_HDR if a.family == AF_INET else IPV6_HDR) + UDP_HDR
    else:
        hdr = 0 if a.family == AF_INET else IPV6_HDR    # IPv4 raw keeps the kernel's header
    now = _now_ns()
    for k in range(got):
        start = s.used + k * slot
        pos = start + HEADROOM
        n = vec[k].msg_len          # the full datagram length (MSG_TRUNC)
        p = s.buf + pos
        if n > a.max_len or (vec[k].msg_hdr.msg_flags & MSG_TRUNC):
            stats[S_RX_TRUNCATED] += 1
            continue
        if names[k].sin6_family != a.family:
            stats[S_RX_MALFORMED] += 1
            continue
        if a.udp and n == 1 and p[0] == 0xFF:
            stats[S_RX_KEEPALIVE] += 1          # RFC 3948 2.3
            continue
        if a.udp and n >= 4 and p[0] == 0 and p[1] == 0 and p[2] == 0 and p[3] == 0:
            if a.n_ctl >= a.ctl_cap:            # RFC 3948 2.2 non-ESP marker: IKE
                stats[S_RX_CTL_OVERFLOW] += 1
                continue
            a.ctl[2 * a.n_ctl] = pos + 4
            a.ctl[2 * a.n_ctl + 1] = n - 4
            _peer_from(&names[k], a.family, a.ctl_peer + a.n_ctl * PEER_BYTES)
            a.n_ctl += 1
            stats[S_RX_IKE] += 1
            continue
        who = a.peer + s.count * PEER_BYTES
        _peer_from(&names[k], a.family, who)
        if hdr:
            h = p - hdr
            tos = _rx_tos(&vec[k].msg_hdr)
            if a.family == AF_INET:
                _ipv4_header(h, hdr + n, P_UDP, tos, who, a.me)
                h += IPV4_HDR
            else:
                _ipv6_header(h, hdr - IPV6_HDR + n, P_UDP if a.udp else a.proto, tos,
                             who, a.me)
                h += IPV6_HDR
            if a.udp:
                memcpy(h, who + 16, 2)           # source port: the sender's
                memcpy(h + 2, a.lport, 2)
                _wr16(h + 4, <uint32_t>(UDP_HDR + n))
                h[6] = 0                         # checksum: verified by the kernel already
                h[7] = 0
        _place(s, start, pos - hdr, hdr + n, start + slot, now)
        stats[S_RX_PACKETS] += 1
        stats[S_RX_BYTES] += n
    s.used += got * slot
    free(vec); free(iov); free(names); free(ctrl)
    return err


cdef int _recv_call(int fd, batch, bytes local_ip, int local_port, RxMeta meta,
                    uint64_t[::1] stats, int udp, int proto, int max_len,
                    int max_packets) except -1:
    cdef Slots s
    cdef RxArgs a
    cdef uint64_t *st = _stats(stats)
    cdef int64_t[:, ::1] ctl = meta.ctl
    cdef uint8_t[:, ::1] ctl_peer = meta.ctl_peer
    cdef uint8_t[:, ::1] peer = meta.peer
    cdef Py_ssize_t slot, v
    cdef int err
    a.family = _family_of(local_ip)
    if max_len < 1 or max_len > 65535 - IPV6_HDR - UDP_HDR:
        raise ValueError("max_len out of range")
    if local_port < 0 or local_port > 65535 or proto < 0 or proto > 255:
        raise ValueError("port or protocol out of range")
    _slots(batch, &s)
    if peer.shape[0] < s.capacity or ctl.shape[0] != ctl_peer.shape[0]:
        raise ValueError("RxMeta is smaller than the batch capacity")
    meta.n_ctl = 0
    slot = _slot_bytes(max_len + 1)
    v = min(s.capacity - s.count, (s.bufsize - s.used) // slot, MAX_VLEN)
    if max_packets > 0:
        v = min(v, max_packets)
    if v <= 0:
        return 0
    a.udp = udp
    a.proto = proto
    a.me = local_ip
    _wr16(a.lport, <uint32_t>local_port)
    a.peer = &peer[0, 0]
    a.ctl = &ctl[0, 0]
    a.ctl_peer = &ctl_peer[0, 0]
    a.ctl_cap = ctl.shape[0]
    a.n_ctl = 0
    a.max_len = max_len
    first = s.count
    with nogil:
        err = _recv(fd, &s, &a, st, <int>v)
        if err > 0 and err != EAGAIN:
            st[S_RX_ERRORS] += 1
            _count_errno(st, RX_ERRNO_BASE_, err)
    batch.count = s.count
    batch.used = s.used
    meta.n_ctl = a.n_ctl
    if err == ERR_NOMEM:
        raise MemoryError()
    if err > 0 and _caller_error(err):
        raise _oserror(err)
    return s.count - first


def udp_recv(int fd, batch, bytes local_ip, int local_port, RxMeta meta not None,
             uint64_t[::1] stats, int max_len=2048, int max_packets=0):
    """recvmmsg() ESP-in-UDP datagrams into `batch` (appended), one call, nonblocking.

    Each ESP datagram gets a synthetic outer IPv4/IPv6 + UDP header (sender -> local_ip,
    sender port -> local_port) so Engine.decrypt takes it as is; meta.peer[i] is its sender.
    IKE messages go to meta.ctl, keepalives are counted. Returns the packets added (0 when
    nothing was waiting or the batch is full).
    """
    return _recv_call(fd, batch, local_ip, local_port, meta, stats, 1, P_UDP, max_len,
                      max_packets)


def esp_raw_recv(int fd, batch, bytes local_ip, RxMeta meta not None, uint64_t[::1] stats,
                 int proto=50, int max_len=2048, int max_packets=0):
    """recvmmsg() on a raw IP socket of protocol `proto` into `batch` (appended).

    IPv4 raw sockets deliver the IP header and it is kept as is; IPv6 raw sockets deliver
    only the payload, so an IPv6 header (sender -> local_ip, next header `proto`, the
    received traffic class) is written in the headroom. Returns the packets added.
    """
    return _recv_call(fd, batch, local_ip, 0, meta, stats, 0, proto, max_len, max_packets)


# ---------------------------------------------------------------------------------------
# send: sendmmsg from slots (ESP-in-UDP and raw)
# ---------------------------------------------------------------------------------------
cdef int _send_all(int fd, mmsghdr *vec, int nv, uint64_t *stats, int *fatal) noexcept nogil:
    """sendmmsg() until every message went or failed; returns how many went."""
    cdef int k = 0, r, e, j, sent = 0
    while k < nv:
        r = sendmmsg(fd, &vec[k], nv - k, 0)
        if r > 0:
            for j in range(k, k + r):
                stats[S_TX_BYTES] += vec[j].msg_len
                sent += <int>vec[j].msg_hdr.msg_iovlen   # a UDP GSO message: its segments
            k += r
            continue
        if r == 0:
            break                 # cannot happen with nv - k > 0; never spin on it
        e = errno
        if e == EINTR:
            continue
        if e == EAGAIN:
            # the socket buffer is full: the rest of this batch is lost, counted one by one
            for j in range(k, nv):
                stats[S_TX_ERRORS] += vec[j].msg_hdr.msg_iovlen
                stats[TX_ERRNO_BASE_ + e] += vec[j].msg_hdr.msg_iovlen
            break
        stats[S_TX_ERRORS] += vec[k].msg_hdr.msg_iovlen
        _count_errno(stats, TX_ERRNO_BASE_, e)
        if _caller_error(e) and e != EINVAL:
            fatal[0] = e          # EINVAL can be one packet's fault (e.g. a bad address)
            break
        k += 1                    # the message at k failed (no route, too big, ...): skip it
    stats[S_TX_PACKETS] += sent
    return sent


cdef inline void _finish_msg(mmsghdr *m, uint8_t *ctrl, int family, int tos, int seg,
                             bint set_tos) noexcept nogil:
    """Control data of one message: the outer TOS, and UDP_SEGMENT when it carries several
    equal-size datagrams (UDP GSO: the kernel splits it, once, late in its stack)."""
    cdef cmsghdr *c
    cdef int v = tos
    cdef uint16_t g = <uint16_t>seg
    cdef size_t space = 0
    if set_tos and tos != 0:
        space += CMSG_SPACE(sizeof(int))
    if m.msg_hdr.msg_iovlen > 1:
        space += CMSG_SPACE(sizeof(uint16_t))
    if space == 0:
        m.msg_hdr.msg_control = NULL
        m.msg_hdr.msg_controllen = 0
        return
    memset(ctrl, 0, CTRL_SPACE)
    m.msg_hdr.msg_control = ctrl
    m.msg_hdr.msg_controllen = space
    c = CMSG_FIRSTHDR(&m.msg_hdr)
    if set_tos and tos != 0:
        c.cmsg_level = IPPROTO_IP if family == AF_INET else IPPROTO_IPV6
        c.cmsg_type = IP_TOS if family == AF_INET else IPV6_TCLASS
        c.cmsg_len = CMSG_LEN(sizeof(int))
        memcpy(CMSG_DATA(c), &v, sizeof(int))
        c = CMSG_NXTHDR(&m.msg_hdr, c)
    if m.msg_hdr.msg_iovlen > 1:
        c.cmsg_level = SOL_UDP_
        c.cmsg_type = UDP_SEGMENT_
        c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
        memcpy(CMSG_DATA(c), &g, sizeof(uint16_t))


cdef int _send(int fd, Slots *s, uint64_t *stats, int family, int proto, bint udp,
               bint set_tos, int *fatal, bint hdrincl=False, bint gso=False) noexcept nogil:
    """Frame every live packet's payload as a message and sendmmsg them in chunks of
    MAX_VLEN. Returns packets sent, or ERR_NOMEM. hdrincl: the whole IP packet, outer
    header included (an IPv4 raw socket with IP_HDRINCL). gso (UDP): consecutive datagrams
    to the same destination with the same TOS and size (the last may be shorter) share one
    message with UDP_SEGMENT, up to GSO_MAX_SEGS and GSO_MAX_BYTES."""
    cdef int cap = <int>min(s.count, MAX_VLEN)
    cdef mmsghdr *vec = <mmsghdr *>calloc(cap, sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>calloc(s.count, sizeof(iovec))
    cdef sockaddr_in6 *names = <sockaddr_in6 *>calloc(cap, sizeof(sockaddr_in6))
    cdef uint8_t *ctrl = <uint8_t *>calloc(cap, CTRL_SPACE)
    cdef int *mtos = <int *>calloc(cap, sizeof(int))
    cdef int *mseg = <int *>calloc(cap, sizeof(int))
    cdef Py_ssize_t *mbytes = <Py_ssize_t *>calloc(cap, sizeof(Py_ssize_t))
    cdef bint *mopen = <bint *>calloc(cap, sizeof(bint))
    cdef Py_ssize_t i, o, l4 = 0, end = 0, ulen, data, dlen
    cdef int tos = 0, nv = 0, ni = 0, sent = 0, k, last
    cdef uint16_t port_be
    cdef sockaddr_in6 dest
    cdef socklen_t namelen = sizeof(sockaddr_in) if family == AF_INET else sizeof(sockaddr_in6)
    if vec == NULL or iov == NULL or names == NULL or ctrl == NULL or mtos == NULL \
            or mseg == NULL or mbytes == NULL or mopen == NULL:
        free(vec); free(iov); free(names); free(ctrl)
        free(mtos); free(mseg); free(mbytes); free(mopen)
        return ERR_NOMEM
    for i in range(s.count):
        if fatal[0]:
            break
        if s.drop[i] != 0:
            continue
        o = s.off[i]
        if _outer(s.buf, s.bufsize, o, s.length[i], family, P_UDP if udp else proto,
                  &l4, &end, &tos) < 0:
            stats[S_TX_MALFORMED] += 1
            continue
        port_be = 0
        data = l4
        if udp:
            ulen = _rd16(s.buf + l4 + 4) if l4 + UDP_HDR <= end else 0
            if ulen <= UDP_HDR or l4 + ulen > end:
                stats[S_TX_MALFORMED] += 1
                continue
            memcpy(&port_be, s.buf + l4 + 2, 2)
            data = l4 + UDP_HDR
            end = l4 + ulen
        if end <= data:
            stats[S_TX_MALFORMED] += 1
            continue
        if hdrincl:
            data = o
        dlen = end - data
        memset(&dest, 0, sizeof(sockaddr_in6))
        _dest(&dest, family, s.buf + o, port_be)
        iov[ni].iov_base = s.buf + data
        iov[ni].iov_len = dlen
        last = nv - 1
        if (gso and udp and last >= 0 and mopen[last] and dlen <= mseg[last]
                and mtos[last] == tos and vec[last].msg_hdr.msg_iovlen < GSO_MAX_SEGS
                and mbytes[last] + dlen <= GSO_MAX_BYTES
                and memcmp(&names[last], &dest, namelen) == 0):
            vec[last].msg_hdr.msg_iovlen += 1          # iov[ni] follows the message's iovs
            mbytes[last] += dlen
            if dlen < mseg[last]:
                mopen[last] = False                    # a shorter datagram ends the group
            ni += 1
            continue
        if nv == cap:
            for k in range(nv):
                _finish_msg(&vec[k], ctrl + k * CTRL_SPACE, family, mtos[k], mseg[k],
                            set_tos and not hdrincl)
            sent += _send_all(fd, vec, nv, stats, fatal)
            nv = 0
            if fatal[0]:
                break
        memcpy(&names[nv], &dest, sizeof(sockaddr_in6))
        vec[nv].msg_hdr.msg_name = &names[nv]
        vec[nv].msg_hdr.msg_namelen = namelen
        vec[nv].msg_hdr.msg_iov = &iov[ni]
        vec[nv].msg_hdr.msg_iovlen = 1
        vec[nv].msg_hdr.msg_flags = 0
        mtos[nv], mseg[nv], mbytes[nv], mopen[nv] = tos, <int>dlen, dlen, True
        ni += 1
        nv += 1
    if nv > 0 and not fatal[0]:
        for k in range(nv):
            _finish_msg(&vec[k], ctrl + k * CTRL_SPACE, family, mtos[k], mseg[k],
                        set_tos and not hdrincl)
        sent += _send_all(fd, vec, nv, stats, fatal)
    free(vec); free(iov); free(names); free(ctrl)
    free(mtos); free(mseg); free(mbytes); free(mopen)
    return sent


cdef int _send_call(int fd, batch, uint64_t[::1] stats, int family, int proto, bint udp,
                    bint set_tos, bint hdrincl=False, bint gso=False) except -1:
    cdef Slots s
    cdef uint64_t *st = _stats(stats)
    cdef int sent, fatal = 0
    if family != AF_INET and family != AF_INET6:
        raise ValueError("family must be AF_INET or AF_INET6")
    if proto < 0 or proto > 255:
        raise ValueError("proto out of range")
    _slots(batch, &s)
    if s.count == 0:
        return 0
    with nogil:
        sent = _send(fd, &s, st, family, proto, udp, set_tos, &fatal, hdrincl, gso)
    if sent == ERR_NOMEM:
        raise MemoryError()
    if fatal:
        raise _oserror(fatal)
    return sent


def udp_send(int fd, batch, uint64_t[::1] stats, int family=AF_INET, bint set_tos=True,
             bint gso=False):
    """sendmmsg() the UDP payload (ESP) of every engine output with drop == 0 to the outer
    destination address and UDP destination port. `family` is the socket's (AF_INET or
    AF_INET6); packets of the other family count as tx_malformed. set_tos passes the outer
    TOS / traffic class (DSCP and RFC 6040 ECN) to the kernel. gso: runs of equal-size
    datagrams to one destination go as one UDP_SEGMENT message (Linux >= 4.18; the wire
    sees the same datagrams). Returns the packets sent."""
    return _send_call(fd, batch, stats, family, P_UDP, True, set_tos, False, gso)


def esp_raw_send(int fd, batch, uint64_t[::1] stats, int family=AF_INET, int proto=50,
                 bint set_tos=True, bint hdrincl=False):
    """sendmmsg() the `proto` part (ESP) of every engine output with drop == 0 on a raw
    socket to the outer destination; the kernel writes the IP header. hdrincl (IPv4, a
    socket with IP_HDRINCL): the engine's IP header goes too (AH: its ICV covers the
    Identification field, RFC 4302 3.3.3.1.1.1). Returns the packets sent."""
    return _send_call(fd, batch, stats, family, proto, False, set_tos,
                      hdrincl and family == AF_INET)


# ---------------------------------------------------------------------------------------
# TUN
# ---------------------------------------------------------------------------------------
def tun_read(int fd, batch, uint64_t[::1] stats, int max_len=2048, int max_packets=0):
    """read() IP packets from a nonblocking TUN fd (IFF_NO_PI) into `batch` (appended) until
    EAGAIN, the batch capacity, its byte budget (a slot for max_len must fit) or
    max_packets. max_len is the largest packet expected (the device MTU): a longer one is
    counted as truncated. Slots are packed exactly like PacketBatch.add. Returns the
    packets added."""
    cdef Slots s
    cdef uint64_t *st = _stats(stats)
    cdef Py_ssize_t need, limit, first
    cdef ssize_t r
    cdef int err = 0
    cdef int64_t now
    if max_len < 1 or max_len > 65535:
        raise ValueError("max_len must be 1..65535")
    _slots(batch, &s)
    first = s.count
    need = _slot_bytes(max_len + 1)
    limit = s.capacity if max_packets <= 0 else min(s.capacity, s.count + max_packets)
    with nogil:
        now = _now_ns()
        while s.count < limit and s.used + need <= s.bufsize:
            # max_len + 1 bytes fit in the slot (TAILROOM): a longer packet shows as > max_len
            r = _read_counted(fd, s.buf + s.used + HEADROOM, max_len + 1, st, S_RX_ERRORS,
                              RX_ERRNO_BASE_)
            if r <= 0:
                err = <int>-r
                break
            if r > max_len:
                st[S_RX_TRUNCATED] += 1
                continue
            _place(&s, s.used, s.used + HEADROOM, r, s.used + _slot_bytes(r), now)
            s.used += _slot_bytes(r)
            st[S_RX_PACKETS] += 1
            st[S_RX_BYTES] += r
    batch.count = s.count
    batch.used = s.used
    if err and _caller_error(err) and s.count == first:
        raise _oserror(err)
    return s.count - first


def tun_write(int fd, batch, uint64_t[::1] stats):
    """write() every packet with drop == 0 to a TUN fd (IFF_NO_PI). Failures (EAGAIN,
    ENOBUFS, EINVAL for a non-IP packet, ...) are counted by errno. Returns packets written."""
    cdef Slots s
    cdef uint64_t *st = _stats(stats)
    cdef Py_ssize_t i, o, ln
    cdef ssize_t r
    cdef int e, fatal = 0, sent = 0
    _slots(batch, &s)
    with nogil:
        i = 0
        while i < s.count:
            o = s.off[i]
            ln = s.length[i]
            if s.drop[i] != 0:
                i += 1
                continue
            if o < 0 or ln < 1 or o > s.bufsize or ln > s.bufsize - o:
                st[S_TX_MALFORMED] += 1
                i += 1
                continue
            r = write(fd, s.buf + o, ln)
            if r < 0:
                e = errno
                if e == EINTR:
                    continue
                st[S_TX_ERRORS] += 1
                _count_errno(st, TX_ERRNO_BASE_, e)
                if e == EBADF or e == EFAULT:
                    fatal = e
                    break
            else:
                sent += 1
                st[S_TX_PACKETS] += 1
                st[S_TX_BYTES] += r
            i += 1
    if fatal:
        raise _oserror(fatal)
    return sent
