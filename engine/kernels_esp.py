"""Numba kernels for ESP (RFC 4303): the prepare and finish phases around native crypto.

encrypt: prepare_encrypt (policy lookup, sequence numbers, headers, padding, op rows)
         -> _crypto.esp_encrypt (IV, cipher, ICV) -> finish_encrypt (UDP checksum, counters)
decrypt: prepare_decrypt (parse, SA lookup, replay pre-check, op rows)
         -> _crypto.esp_decrypt (ICV check, cipher) -> finish_decrypt (replay advance in
         order, trailer and padding checks, decapsulation, selector check, counters)

Every kernel walks the batch once, skips packets already dropped, and records a drop
reason instead of raising. Bounds are checked explicitly: Numba does not.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .drops import Drop
from .kernels_ip import (JIT, P_AH, P_ESP, P_IPV4, P_IPV6, P_NONE, P_UDP, csum_add,
                         csum_fold, dscp_of, ecn_of, ipv4_set_checksum, ipv4_sum, move_bytes,
                         parse_ip, ports_of, rd8, rd16, rd32, set_ecn, wr8, wr16, wr32)
from .ops import (OP_AUTH_LEN, OP_AUTH_OFF, OP_DATA_LEN, OP_DATA_OFF, OP_ICV_OFF, OP_IV_OFF,
                  OP_SA, OP_SEQ)
from .kernels_spd import lookup_outbound
from .replay import advance, check, infer_seq, inferred_elsewhere
from .sad import (ADDR_DST, ADDR_SEL_DST, ADDR_SEL_SRC, ADDR_SRC, CTR_BYTES, CTR_DROP0,
                  CTR_PACKETS)

D_NO_POLICY = np.uint8(Drop.NO_POLICY)
D_NO_SA = np.uint8(Drop.NO_SA)
D_AUTH_FAILED = np.uint8(Drop.AUTH_FAILED)
D_REPLAY = np.uint8(Drop.REPLAY)
D_MALFORMED = np.uint8(Drop.MALFORMED)
D_POLICY_MISMATCH = np.uint8(Drop.POLICY_MISMATCH)
D_SEQ_EXHAUSTED = np.uint8(Drop.SEQ_EXHAUSTED)
D_KEEPALIVE = np.uint8(Drop.KEEPALIVE)
D_DUMMY = np.uint8(Drop.DUMMY)
# Internal marks, never seen outside Engine.decrypt (Drop values stay below them):
D_DONE = np.uint8(253)    # finished in an earlier round of this batch
D_DEFER = np.uint8(254)   # left for the next round (see prepare_decrypt)

MODE_TUNNEL = 1
U32_MAX = np.uint64(0xFFFFFFFF)
U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
U1 = np.uint64(1)
U6 = np.uint64(6)
U63 = np.uint64(63)
OUTER_TTL = 64


# ---------------------------------------------------------------------------------------
# lookups
# ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def spi_slot(spi, size):
    """Fibonacci hash of the SPI (engine/sad.py spi_hash is the same function)."""
    return ((np.int64(spi) * np.int64(0x9E3779B1)) & 0xFFFFFFFF) >> 16 & (size - 1)


@nb.njit(**JIT)
def lookup_inbound(rec, addr, in_hash, spi, buf, dst_off, family, proto):
    """Inbound SA slot for (SPI, destination address, protocol), or -1."""
    return find_inbound(rec, addr, in_hash, spi, buf, dst_off, family, proto)


@nb.njit(inline="always", **JIT)
def find_inbound(rec, addr, in_hash, spi, buf, dst_off, family, proto):
    """lookup_inbound inlined (prepare_decrypt: a call passing these arrays costs more
    than the lookup)."""
    size = in_hash.shape[0]
    k = spi_slot(spi, size)
    for _ in range(size):
        s = in_hash[k]
        if s < 0:
            return -1
        r = rec[s]
        if r.spi == spi and r.proto == proto and r.family == family and r.active:
            if family == 4:
                if rd32(buf, dst_off) == np.int64(r.dst4):
                    return s
            else:
                same = True
                for j in range(16):
                    if addr[s, ADDR_DST + j] != rd8(buf, dst_off + j):
                        same = False
                        break
                if same:
                    return s
        k = (k + 1) & (size - 1)
    return -1


@nb.njit(inline="always", **JIT)
def prefix_match(buf, off, addr, s, base, plen):
    full = plen >> 3
    for j in range(full):
        if buf[off + j] != addr[s, base + j]:
            return False
    rem = plen & 7
    if rem:
        mask = (0xFF << (8 - rem)) & 0xFF
        if (buf[off + full] & mask) != (addr[s, base + full] & mask):
            return False
    return True


@nb.njit(inline="always", **JIT)
def selector_match(rec, addr, s, buf, o, ver, proto, sport, dport):
    """Does the IP packet at o (version ver, upper protocol and ports given) match SA s's
    selector? An SA without a selector matches everything."""
    r = rec[s]
    if not r.has_sel:
        return True
    if r.sel_family != ver:
        return False
    if ver == 4:
        # the prefixes as 32-bit network and mask (engine/sad.py), not byte by byte
        if (rd32(buf, o + 12) & np.int64(r.sel_src_mask4)) != np.int64(r.sel_src4):
            return False
        if (rd32(buf, o + 16) & np.int64(r.sel_dst_mask4)) != np.int64(r.sel_dst4):
            return False
    elif not (prefix_match(buf, o + 8, addr, s, ADDR_SEL_SRC, r.sel_src_len)
              and prefix_match(buf, o + 24, addr, s, ADDR_SEL_DST, r.sel_dst_len)):
        return False
    if r.sel_proto != 0 and r.sel_proto != proto:
        return False
    if r.sel_sport >= 0 and r.sel_sport != sport:
        return False
    if r.sel_dport >= 0 and r.sel_dport != dport:
        return False
    return True


@nb.njit(inline="always", **JIT)
def count_drop(ctr, gdrop, s, reason):
    gdrop[reason] += 1
    if s >= 0:
        ctr[s, CTR_DROP0 + reason] += 1


# ---------------------------------------------------------------------------------------
# encrypt
# ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def write_outer_ipv4(buf, o, total, proto, tos, df, ident, rec, s):
    """Outer IPv4 header; the checksum is summed from the field values (RFC 1071), not
    re-read from the buffer."""
    flags = 0x4000 if df else 0
    ident = ident & 0xFFFF
    src = np.int64(rec[s].src4)
    dst = np.int64(rec[s].dst4)
    acc = (np.int64(0x4500 | tos) + total + ident + flags + ((OUTER_TTL << 8) | proto)
           + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF))
    wr32(buf, o + 12, src)
    wr32(buf, o + 16, dst)
    wr8(buf, o, 0x45)
    wr8(buf, o + 1, tos)
    wr16(buf, o + 2, total)
    wr16(buf, o + 4, ident)
    wr16(buf, o + 6, flags)
    wr8(buf, o + 8, OUTER_TTL)
    wr8(buf, o + 9, proto)
    wr16(buf, o + 10, csum_fold(acc))


@nb.njit(inline="always", **JIT)
def write_outer_ipv6(buf, o, payload_len, proto, tclass, addr, s):
    buf[o] = 0x60 | (tclass >> 4)
    buf[o + 1] = (tclass & 0x0F) << 4     # flow label 0
    buf[o + 2] = 0
    buf[o + 3] = 0
    wr16(buf, o + 4, payload_len)
    buf[o + 6] = proto
    buf[o + 7] = OUTER_TTL
    for j in range(16):
        buf[o + 8 + j] = addr[s, ADDR_SRC + j]
        buf[o + 24 + j] = addr[s, ADDR_DST + j]


@nb.njit(**JIT)
def prepare_encrypt(buf, off, length, slot_start, slot_end, drop, sa, n,
                    rec, addr, pol_i, pol_a, flow_keys, flow_slots, ops, ctr, gdrop):
    """Classify, number and frame every packet; leave IV/ciphertext/ICV to the crypto pass."""
    for i in range(n):
        ops[i, OP_SA] = -1    # >= 0 only once the packet is framed (finish relies on it)
        if drop[i]:
            count_drop(ctr, gdrop, -1, drop[i])
            continue
        o = off[i]
        ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, o, length[i])
        fragment = False
        if not ok:
            # an IPv4 fragment (the kernel fragments what exceeds st0's MTU) travels whole
            # in a tunnel-mode SA (RFC 4301 7): the first one has ports, later ones none
            ok, hl, tot, proto, l4 = ipv4_fragment(buf, o, length[i])
            ver = 4
            fragment = True
        if not ok:
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, -1, D_MALFORMED)
            continue
        L = tot                      # the IP length decides (link-layer trailers ignored)
        sport, dport = ports_of(buf, l4, o + L, proto) if l4 >= 0 else (0, 0)
        s = sa[i]
        if s < 0:
            s = lookup_outbound(pol_i, pol_a, flow_keys, flow_slots, buf, o, ver, proto, sport,
                                dport)
        if s < 0 or s >= rec.shape[0] or not rec[s].active or not rec[s].outbound:
            drop[i] = D_NO_POLICY
            count_drop(ctr, gdrop, -1, D_NO_POLICY)
            continue
        sa[i] = s
        r = rec[s]
        if fragment and (r.mode != MODE_TUNNEL or r.proto == P_AH):
            drop[i] = D_MALFORMED    # transport mode and AH protect whole datagrams only
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        limit = U64_MAX if r.esn else U32_MAX
        if r.seq_out >= limit:
            drop[i] = D_SEQ_EXHAUSTED
            count_drop(ctr, gdrop, s, D_SEQ_EXHAUSTED)
            continue
        if r.proto == P_AH:
            continue                 # framed by kernels_ah.prepare_encrypt_ah
        seq = r.seq_out + np.uint64(1)
        iv = np.int64(r.iv_len)
        icv = np.int64(r.icv_len)
        align = np.int64(r.align)
        udp = 8 if r.encap else 0
        outer = 0
        if r.mode == MODE_TUNNEL:
            outer = 20 if r.family == 4 else 40
            payload_off = o
            payload_len = L
            next_header = P_IPV4 if ver == 4 else P_IPV6
        else:
            payload_off = o + hl
            payload_len = L - hl
            next_header = proto
        pad = -(payload_len + 2) & (align - 1)     # align: a power of 2 (engine/sad.py)
        enc_len = payload_len + pad + 2
        grow_front = outer + udp + 8 + iv
        new_off = o - grow_front
        new_end = payload_off + enc_len + icv
        if new_off < slot_start[i] or new_end > slot_end[i]:
            drop[i] = D_MALFORMED       # batch built without head/tailroom: never write outside
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        # The output's 16-bit IPv4 total / IPv6 payload length must hold it (no jumbograms,
        # no fragmentation): a bigger result would go out with a wrapped length field.
        out_ver = r.family if r.mode == MODE_TUNNEL else ver
        out_len = new_end - new_off - (40 if out_ver == 6 else 0)
        if out_len > 0xFFFF:
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        rec[s].seq_out = seq
        # trailer: padding 1, 2, 3, ... (RFC 4303 2.4), pad length, next header
        t = payload_off + payload_len
        for k in range(pad):
            wr8(buf, t + k, k + 1)
        wr8(buf, t + pad, pad)
        wr8(buf, t + pad + 1, next_header)
        if r.mode == MODE_TUNNEL:
            esp = new_off + outer + udp
            total = outer + udp + 8 + iv + enc_len + icv
            inner_ecn = ecn_of(buf, o)
            tos = (dscp_of(buf, o) << 2) | inner_ecn     # RFC 6040 normal mode: copy ECN
            oproto = P_UDP if udp else P_ESP
            if r.family == 4:
                df = ver == 6 or (buf[o + 6] & 0x40) != 0
                write_outer_ipv4(buf, new_off, total, oproto, tos, df, np.int64(seq & U32_MAX),
                                 rec, s)
            else:
                write_outer_ipv6(buf, new_off, total - 40, oproto, tos, addr, s)
            udp_off = new_off + outer
        else:
            # transport: slide the IP header (and IPv6 extension headers) to the front
            move_bytes(buf, new_off, o, hl)
            buf[nh_off - grow_front + 0] = P_UDP if udp else P_ESP
            total = hl + udp + 8 + iv + enc_len + icv
            if ver == 4:
                wr16(buf, new_off + 2, total)
                ipv4_set_checksum(buf, new_off, hl)
            else:
                wr16(buf, new_off + 4, total - 40)
            udp_off = new_off + hl
            esp = udp_off + udp
        if udp:
            wr16(buf, udp_off, r.encap_sport)
            wr16(buf, udp_off + 2, r.encap_dport)
            wr16(buf, udp_off + 4, total - (udp_off - new_off))
            wr16(buf, udp_off + 6, 0)   # IPv4: no checksum (RFC 3948 2.1); IPv6: finish pass
        wr32(buf, esp, np.int64(r.spi))
        wr32(buf, esp + 4, np.int64(seq & U32_MAX))
        off[i] = new_off
        length[i] = total
        ops[i, OP_SA] = s
        ops[i, OP_AUTH_OFF] = esp
        ops[i, OP_AUTH_LEN] = 8 + iv + enc_len
        ops[i, OP_IV_OFF] = esp + 8
        ops[i, OP_DATA_OFF] = esp + 8 + iv
        ops[i, OP_DATA_LEN] = enc_len
        ops[i, OP_ICV_OFF] = esp + 8 + iv + enc_len
        ops[i, OP_SEQ] = np.int64(seq)


@nb.njit(**JIT)
def udp6_checksum(buf, o, udp_off, udp_len):
    """RFC 8200 8.1: the UDP checksum is mandatory over IPv6 (pseudo-header included)."""
    acc = csum_add(buf, o + 8, 32, np.int64(0))
    acc += udp_len + P_UDP
    buf[udp_off + 6] = 0
    buf[udp_off + 7] = 0
    acc = csum_add(buf, udp_off, udp_len, acc)
    c = csum_fold(acc)
    if c == 0:
        c = 0xFFFF
    wr16(buf, udp_off + 6, c)


@nb.njit(**JIT)
def finish_encrypt(buf, off, length, drop, sa, n, rec, ops, ctr, gdrop):
    for i in range(n):
        s = sa[i]
        if drop[i]:
            if ops[i, OP_SA] >= 0:       # framed, then dropped by a crypto pass (ESP or AH)
                count_drop(ctr, gdrop, s, drop[i])
            continue
        r = rec[s]
        if r.proto == P_AH:
            continue                 # kernels_ah.finish_encrypt_ah
        o = off[i]
        if r.encap and (buf[o] >> 4) == 6:
            udp_off = ops[i, OP_AUTH_OFF] - 8
            udp6_checksum(buf, o, udp_off, o + length[i] - udp_off)
        ctr[s, CTR_PACKETS] += 1
        ctr[s, CTR_BYTES] += length[i]


# ---------------------------------------------------------------------------------------
# decrypt
# ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def is_encap_port(ports, p):
    for k in range(ports.shape[0]):
        if ports[k] == p:
            return True
    return False


@nb.njit(**JIT)
def prepare_decrypt(buf, off, length, drop, sa, n, rec, addr, in_hash, encap_ports,
                    top, bitmap, ops, aux, ctr, gdrop, ah):
    """Parse, find the SA, pre-check replay; record what the crypto and finish passes need.

    `ah`: there are inbound AH SAs, and protocol 51 packets are left alive for
    kernels_ah.prepare_decrypt_ah. Without (the engine then skips the AH passes), they are
    dropped here as that kernel would drop them: MALFORMED if truncated, else NO_SA.

    aux[i, 0] = offset of the outer IP header, aux[i, 1] = offset of the byte naming the
    ESP/UDP protocol (transport mode rewrites it), aux[i, 2] = 1 if ESP-in-UDP.

    ESN (RFC 4303 App. A) infers a packet's high bits from the window as it stands when
    that packet arrives, and within a batch the window moves only in finish_decrypt. So
    each SA's provisional edge `ptop` follows the packets pre-checked so far (ESP and AH);
    at the first packet whose high bits would differ between `ptop` and the real edge
    `top`, the batch is cut: that packet and the rest are marked D_DEFER and this returns
    its index, and Engine.decrypt finishes the prefix and runs another round on the rest.
    Packets are thus numbered exactly as if processed one by one (a cut happens once per
    2^32 packets of an SA in normal traffic). Returns n when there is no cut.
    """
    for k in range(rec.shape[0]):
        rec[k].ptop = top[k]
    for i in range(n):
        ops[i, OP_SA] = -1
        if drop[i] >= D_DONE:
            continue                 # not this round's packet
        if drop[i]:
            count_drop(ctr, gdrop, -1, drop[i])
            continue
        o = off[i]
        ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, o, length[i])
        if ok and ver == 4 and csum_fold(ipv4_sum(buf, o, hl)) != 0:
            ok = False
        if not ok:
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, -1, D_MALFORMED)
            continue
        end = o + tot
        length[i] = tot
        if proto == P_AH:
            if not ah:
                reason = D_MALFORMED if l4 + 12 > end else D_NO_SA
                drop[i] = reason
                count_drop(ctr, gdrop, -1, reason)
                continue
            # framed by kernels_ah.prepare_decrypt_ah; only its ESN ordering is tracked here
            if l4 + 12 <= end:
                s = lookup_inbound(rec, addr, in_hash, rd32(buf, l4 + 4), buf,
                                   o + 16 if ver == 4 else o + 24, ver, P_AH)
                if s >= 0 and not rec[s].outbound and rec[s].esn:
                    if esn_cut(rec, top, bitmap, s, np.uint64(rd32(buf, l4 + 8))):
                        return defer_from(drop, ops, i, n)
            continue
        encap = 0
        esp = l4
        if proto == P_UDP:
            if l4 + 8 > end or not is_encap_port(encap_ports, rd16(buf, l4 + 2)):
                drop[i] = D_NO_SA
                count_drop(ctr, gdrop, -1, D_NO_SA)
                continue
            if end - (l4 + 8) == 1 and buf[l4 + 8] == 0xFF:
                drop[i] = D_KEEPALIVE      # RFC 3948 2.2 NAT keepalive
                count_drop(ctr, gdrop, -1, D_KEEPALIVE)
                continue
            esp = l4 + 8
            if end - esp >= 4 and rd32(buf, esp) == 0:
                drop[i] = D_NO_SA          # non-ESP marker: an IKE message, not ours
                count_drop(ctr, gdrop, -1, D_NO_SA)
                continue
            encap = 1
        elif proto != P_ESP:
            drop[i] = D_NO_SA
            count_drop(ctr, gdrop, -1, D_NO_SA)
            continue
        if esp + 8 > end:
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, -1, D_MALFORMED)
            continue
        spi = rd32(buf, esp)
        dst_off = o + 16 if ver == 4 else o + 24
        s = find_inbound(rec, addr, in_hash, spi, buf, dst_off, ver, P_ESP)
        if s < 0 or rec[s].encap != encap or rec[s].outbound:
            drop[i] = D_NO_SA
            count_drop(ctr, gdrop, -1, D_NO_SA)
            continue
        sa[i] = s
        r = rec[s]
        iv = np.int64(r.iv_len)
        icv = np.int64(r.icv_len)
        enc_len = end - esp - 8 - iv - icv
        if enc_len < 2 or (r.align > 4 and (enc_len & (np.int64(r.align) - 1)) != 0):
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        seq_lo = np.uint64(rd32(buf, esp + 4))
        if r.esn and esn_cut(rec, top, bitmap, s, seq_lo):
            return defer_from(drop, ops, i, n)
        seq = infer_seq(top[s], r.window, r.esn, seq_lo)
        if r.integrity and r.window > 0:
            if (not r.esn and seq_lo == 0) or not check(bitmap, r.bm_base, r.bm_words,
                                                        top[s], r.window, seq):
                drop[i] = D_REPLAY
                count_drop(ctr, gdrop, s, D_REPLAY)
                continue
        ops[i, OP_SA] = s
        ops[i, OP_AUTH_OFF] = esp
        ops[i, OP_AUTH_LEN] = 8 + iv + enc_len
        ops[i, OP_IV_OFF] = esp + 8
        ops[i, OP_DATA_OFF] = esp + 8 + iv
        ops[i, OP_DATA_LEN] = enc_len
        ops[i, OP_ICV_OFF] = esp + 8 + iv + enc_len
        ops[i, OP_SEQ] = np.int64(seq)
        aux[i, 0] = o
        aux[i, 1] = nh_off
        aux[i, 2] = encap
    return n


@nb.njit(inline="always", **JIT)
def esn_cut(rec, top, bitmap, s, seq_lo):
    """True when this packet's ESN high bits depend on earlier packets of the batch (the
    provisional edge infers otherwise than the real one). Otherwise advance the provisional
    edge as the real one will if this packet's ICV verifies."""
    r = rec[s]
    seq = infer_seq(top[s], r.window, r.esn, seq_lo)
    if infer_seq(r.ptop, r.window, r.esn, seq_lo) != seq:
        return True
    if r.integrity and seq > r.ptop and (
            r.window == 0 or check(bitmap, r.bm_base, r.bm_words, top[s], r.window, seq)):
        rec[s].ptop = seq
    return False


@nb.njit(**JIT)
def defer_from(drop, ops, i, n):
    """Leave packets i.. for the next round: alive ones are marked D_DEFER; rows reset."""
    for j in range(i, n):
        ops[j, OP_SA] = -1
        if drop[j] == 0:
            drop[j] = D_DEFER
    return i


@nb.njit(inline="always", **JIT)
def ipv4_fragment(buf, o, avail):
    """An IPv4 fragment at o: (ok, hdr_len, total_len, proto, l4_off). The first fragment
    (offset 0) keeps its L4 offset when the L4 header is inside it; later ones report -1
    (their ports are unknown: only port-less selectors match them)."""
    if avail < 20 or (rd8(buf, o) >> 4) != 4:
        return False, 0, 0, 0, -1
    ihl = np.int64(rd8(buf, o) & 0x0F) * 4
    tot = rd16(buf, o + 2)
    if ihl < 20 or tot < ihl or tot > avail:
        return False, 0, 0, 0, -1
    frag = rd16(buf, o + 6)
    if (frag & 0x3FFF) == 0:
        return False, 0, 0, 0, -1            # not a fragment: parse_ip refused it for cause
    l4 = o + ihl if (frag & 0x1FFF) == 0 and tot >= ihl + 4 else -1
    return True, ihl, tot, np.int64(rd8(buf, o + 9)), l4


@nb.njit(inline="always", **JIT)
def inner_packet(buf, p, avail, want_ver):
    """Validate a tunnel's inner IP packet. Returns (total length or -1, upper protocol,
    L4 offset); an inner IPv4 fragment is valid but reports protocol 0 and no L4 header
    (its ports are unknown), as the selector check expects."""
    if avail < 1 or (buf[p] >> 4) != want_ver:
        return np.int64(-1), np.int64(0), np.int64(-1)
    ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, p, avail)
    if ok:
        return tot, proto, l4
    if want_ver == 4 and avail >= 20:
        ihl = np.int64(buf[p] & 0x0F) * 4
        t = rd16(buf, p + 2)
        if ihl >= 20 and ihl <= t <= avail:
            return t, np.int64(0), np.int64(-1)
    return np.int64(-1), np.int64(0), np.int64(-1)


@nb.njit(inline="always", **JIT)
def ecn_decap(buf, outer_o, inner_o):
    """RFC 6040 4.2 normal mode. Returns False when the packet must be dropped
    (CE outer on a Not-ECT inner)."""
    outer = ecn_of(buf, outer_o)
    inner = ecn_of(buf, inner_o)
    if outer == 3:
        if inner == 0:
            return False
        if inner != 3:
            set_ecn(buf, inner_o, 3)
    elif outer == 1 and inner == 2:
        set_ecn(buf, inner_o, 1)
    return True


@nb.njit(inline="always", **JIT)
def default_padding(buf, p, pad):
    """Are the `pad` bytes at p 1, 2, 3, ... (RFC 4303 2.4)? Four at a time, then one."""
    k = 0
    while k + 4 <= pad:
        if rd32(buf, p + k) != ((k + 1) << 24 | (k + 2) << 16 | (k + 3) << 8 | (k + 4)):
            return False
        k += 4
    while k < pad:
        if rd8(buf, p + k) != k + 1:
            return False
        k += 1
    return True


@nb.njit(inline="always", **JIT)
def accept_in_order(rec, top, bitmap, s, seq):
    """The in-order half of anti-replay (RFC 4303 3.4.3), for ESP and AH packets whose ICV
    verified: advance SA s's window with `seq`, or return why the packet is dropped."""
    r = rec[s]
    if not r.integrity:
        return np.uint8(0)            # RFC 4303: no integrity, no replay service
    if inferred_elsewhere(top[s], r.window, r.esn, seq):
        return D_AUTH_FAILED          # in file order: other ESN high bits, the ICV fails
    if r.window > 0:
        t = top[s]
        words = np.uint64(r.bm_words)
        if seq > t and (seq >> U6) == (t >> U6) and (words & (words - U1)) == 0:
            # the common case, in order inside the edge's word: what replay.advance does
            # then (no word to clear), with a mask for its modulo (sad.py: words = 2^k)
            k = np.int64(r.bm_base) + np.int64((seq >> U6) & (words - U1))
            bitmap[k] |= U1 << (seq & U63)
            top[s] = seq
        elif not advance(bitmap, r.bm_base, r.bm_words, top, s, r.window, seq):
            return D_REPLAY           # e.g. a duplicate inside this batch
    elif seq > top[s]:
        top[s] = seq                  # no window, but ESN inference still needs the edge
    return np.uint8(0)


@nb.njit(**JIT)
def finish_decrypt(buf, off, length, drop, sa, n, rec, addr, top, bitmap, ops, aux,
                   ctr, gdrop):
    """In order: advance replay windows, check the trailer, decapsulate, check selectors."""
    for i in range(n):
        s = np.int64(ops[i, OP_SA])
        if drop[i]:
            if s >= 0:     # dropped by the crypto pass (prepare did not count it)
                count_drop(ctr, gdrop, s, drop[i])
            continue
        r = rec[s]
        if r.proto == P_AH:
            continue                 # kernels_ah.finish_decrypt_ah
        reason = accept_in_order(rec, top, bitmap, s, np.uint64(ops[i, OP_SEQ]))
        if reason:
            drop[i] = reason
            count_drop(ctr, gdrop, s, reason)
            continue
        data = ops[i, OP_DATA_OFF]
        dlen = ops[i, OP_DATA_LEN]
        end = data + dlen
        pad = rd8(buf, end - 2)
        nh = rd8(buf, end - 1)
        if pad + 2 > dlen:
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        if not default_padding(buf, end - 2 - pad, pad):
            drop[i] = D_MALFORMED
            count_drop(ctr, gdrop, s, D_MALFORMED)
            continue
        plen = dlen - 2 - pad
        if nh == P_NONE:
            drop[i] = D_DUMMY             # RFC 4303 2.6 TFC dummy packet
            count_drop(ctr, gdrop, s, D_DUMMY)
            continue
        outer_o = aux[i, 0]
        if r.mode == MODE_TUNNEL:
            if nh != P_IPV4 and nh != P_IPV6:
                drop[i] = D_MALFORMED
                count_drop(ctr, gdrop, s, D_MALFORMED)
                continue
            ver = 4 if nh == P_IPV4 else 6
            ilen, proto2, l4b = inner_packet(buf, data, plen, ver)
            if ilen < 0 or not ecn_decap(buf, outer_o, data):
                drop[i] = D_MALFORMED
                count_drop(ctr, gdrop, s, D_MALFORMED)
                continue
            new_off = data
            new_len = ilen                # TFC padding after the inner packet is stripped
        else:
            hl = ops[i, OP_AUTH_OFF] - outer_o - (8 if aux[i, 2] else 0)
            new_off = data - hl
            move_bytes(buf, new_off, outer_o, hl)
            buf[aux[i, 1] + (new_off - outer_o)] = nh
            new_len = hl + plen
            if (buf[new_off] >> 4) == 4:
                wr16(buf, new_off + 2, new_len)
                ipv4_set_checksum(buf, new_off, hl)
            else:
                wr16(buf, new_off + 4, new_len - 40)
            ver = np.int64(buf[new_off] >> 4)
            proto2 = np.int64(0)
            l4b = np.int64(-1)
            if r.has_sel:
                ok, v2, hl2, tot2, p2, l4x, nhb = parse_ip(buf, new_off, new_len)
                if ok:
                    proto2 = p2
                    l4b = l4x
        if r.has_sel:
            sport, dport = np.int64(0), np.int64(0)
            if l4b >= 0:
                sport, dport = ports_of(buf, l4b, new_off + new_len, proto2)
            if not selector_match(rec, addr, s, buf, new_off, ver, proto2, sport, dport):
                drop[i] = D_POLICY_MISMATCH
                count_drop(ctr, gdrop, s, D_POLICY_MISMATCH)
                continue
        off[i] = new_off
        length[i] = new_len
        ctr[s, CTR_PACKETS] += 1
        ctr[s, CTR_BYTES] += new_len
