# Header arithmetic for engine/_netio.pyx: the outer IPv4/IPv6 + UDP headers it synthesizes
# in front of received datagrams, the outer headers it parses before sending, sockaddrs and
# the TOS / traffic-class ancillary data. Inline, nogil, bounds checked by the callers'
# contracts stated on each function.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t
from libc.string cimport memcpy, memset

from engine._libc_net cimport *

cdef enum:
    PEER_BYTES = 18       # 16 address bytes (IPv4 in the first 4) + 2 port bytes, big endian
    IPV4_HDR = 20
    IPV6_HDR = 40
    UDP_HDR = 8
    P_UDP = 17
    OUTER_TTL = 64


cdef inline uint32_t _rd16(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline void _wr16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _ipv4_header(uint8_t *h, Py_ssize_t total, int proto, int tos,
                              const uint8_t *src, const uint8_t *dst) noexcept nogil:
    """20 bytes at h: IPv4 header with a correct checksum (RFC 791, RFC 1071), no options,
    not a fragment, so kernels_ip.parse_ip and the engine's checksum check accept it."""
    cdef uint32_t acc = 0
    cdef int k
    h[0] = 0x45
    h[1] = tos
    _wr16(h + 2, <uint32_t>total)
    memset(h + 4, 0, 4)              # identification, flags, fragment offset
    h[8] = OUTER_TTL
    h[9] = proto
    h[10] = 0
    h[11] = 0
    memcpy(h + 12, src, 4)
    memcpy(h + 16, dst, 4)
    for k in range(0, IPV4_HDR, 2):
        acc += _rd16(h + k)
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    _wr16(h + 10, (~acc) & 0xFFFF)


cdef inline void _ipv6_header(uint8_t *h, Py_ssize_t payload, int proto, int tclass,
                              const uint8_t *src, const uint8_t *dst) noexcept nogil:
    """40 bytes at h: IPv6 header (RFC 8200), flow label 0, no extension headers."""
    h[0] = 0x60 | ((tclass >> 4) & 0x0F)
    h[1] = (tclass & 0x0F) << 4
    h[2] = 0
    h[3] = 0
    _wr16(h + 4, <uint32_t>payload)
    h[6] = proto
    h[7] = OUTER_TTL
    memcpy(h + 8, src, 16)
    memcpy(h + 24, dst, 16)


cdef inline int _rx_tos(msghdr *m) noexcept nogil:
    """The TOS (IP_RECVTOS) or traffic class (IPV6_RECVTCLASS) a datagram carried, else 0."""
    cdef cmsghdr *c = CMSG_FIRSTHDR(m)
    cdef int v
    while c != NULL:
        if c.cmsg_level == IPPROTO_IP and c.cmsg_type == IP_TOS and c.cmsg_len >= CMSG_LEN(1):
            return CMSG_DATA(c)[0]
        if (c.cmsg_level == IPPROTO_IPV6 and c.cmsg_type == IPV6_TCLASS
                and c.cmsg_len >= CMSG_LEN(sizeof(int))):
            memcpy(&v, CMSG_DATA(c), sizeof(int))
            return v & 0xFF
        c = CMSG_NXTHDR(m, c)
    return 0


cdef inline void _tx_tos(msghdr *m, uint8_t *ctrl, int family, int tos) noexcept nogil:
    """Ask for the outer header's TOS / traffic class (the engine's DSCP and RFC 6040 ECN)
    on this message; ctrl holds at least CMSG_SPACE(sizeof(int)) bytes."""
    cdef cmsghdr *c
    cdef int v = tos
    m.msg_control = ctrl
    m.msg_controllen = CMSG_SPACE(sizeof(int))
    c = CMSG_FIRSTHDR(m)
    c.cmsg_level = IPPROTO_IP if family == AF_INET else IPPROTO_IPV6
    c.cmsg_type = IP_TOS if family == AF_INET else IPV6_TCLASS
    c.cmsg_len = CMSG_LEN(sizeof(int))
    memcpy(CMSG_DATA(c), &v, sizeof(int))


cdef inline void _peer_from(const sockaddr_in6 *sa, int family, uint8_t *out) noexcept nogil:
    """Sender address into PEER_BYTES at out (16 address bytes, 2 port bytes)."""
    cdef const sockaddr_in *s4
    memset(out, 0, PEER_BYTES)
    if family == AF_INET:
        s4 = <const sockaddr_in *>sa
        memcpy(out, &s4.sin_addr, 4)
        memcpy(out + 16, &s4.sin_port, 2)
    else:
        memcpy(out, &sa.sin6_addr, 16)
        memcpy(out + 16, &sa.sin6_port, 2)


cdef inline void _dest(sockaddr_in6 *name, int family, const uint8_t *hdr,
                       uint16_t port_be) noexcept nogil:
    """Destination sockaddr from the (already checked) outer IP header at hdr."""
    cdef sockaddr_in *s4
    memset(name, 0, sizeof(sockaddr_in6))
    if family == AF_INET:
        s4 = <sockaddr_in *>name
        s4.sin_family = AF_INET
        s4.sin_port = port_be
        memcpy(&s4.sin_addr, hdr + 16, 4)
    else:
        name.sin6_family = AF_INET6
        name.sin6_port = port_be
        memcpy(&name.sin6_addr, hdr + 24, 16)


cdef inline Py_ssize_t _outer(const uint8_t *buf, Py_ssize_t bufsize, Py_ssize_t o,
                              Py_ssize_t ln, int family, int proto, Py_ssize_t *l4,
                              Py_ssize_t *end, int *tos) noexcept nogil:
    """Check the outer IP header of an engine output [o, o + ln) of buf[bufsize]: returns
    its length, or -1 when it does not parse, is of another family or protocol, or is a
    fragment. Sets l4 / end (where the protocol's bytes start / the IP packet ends; end
    <= o + ln) and tos (TOS or traffic class)."""
    cdef Py_ssize_t ihl, tot
    if o < 0 or ln < 1 or o > bufsize or ln > bufsize - o:
        return -1
    if family == AF_INET:
        if ln < IPV4_HDR or (buf[o] >> 4) != 4:
            return -1
        ihl = (buf[o] & 0x0F) * 4
        tot = _rd16(buf + o + 2)
        if ihl < IPV4_HDR or tot < ihl or tot > ln or buf[o + 9] != proto:
            return -1
        if (_rd16(buf + o + 6) & 0x3FFF) != 0:
            return -1
        tos[0] = buf[o + 1]
        l4[0] = o + ihl
        end[0] = o + tot
        return ihl
    if ln < IPV6_HDR or (buf[o] >> 4) != 6 or buf[o + 6] != proto:
        return -1
    tot = IPV6_HDR + _rd16(buf + o + 4)
    if tot > ln:
        return -1
    tos[0] = ((buf[o] & 0x0F) << 4) | (buf[o + 1] >> 4)
    l4[0] = o + IPV6_HDR
    end[0] = o + tot
    return IPV6_HDR
