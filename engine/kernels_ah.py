"""Numba kernels for AH (RFC 4302): the prepare and finish phases around the native ICV pass.

AH rows go through the same three phases as ESP, in the same batch:

encrypt: kernels_esp.prepare_encrypt (policy lookup, sequence exhaustion; leaves AH rows
         unframed) -> prepare_encrypt_ah (headers, save + zero the mutable fields, op rows)
         -> _crypto.ah_icv(verify=False) -> kernels_esp.finish_encrypt (skips AH rows)
         -> finish_encrypt_ah (restore the mutable fields, counters)
decrypt: kernels_esp.prepare_decrypt (outer IP checks; leaves protocol 51 to us)
         -> prepare_decrypt_ah (SA lookup, replay pre-check, save the mutable fields and
         the received ICV, zero them) -> _crypto.ah_icv(verify=True)
         -> kernels_esp.finish_decrypt (counts crypto drops, skips AH rows)
         -> finish_decrypt_ah (restore, replay advance in order, strip AH or decapsulate,
         selector check, counters)

An SA is either ESP or AH, so running the AH loops after the ESP ones keeps every SA's
packets in batch order (the replay window only needs per-SA order).

The ICV covers the whole IP packet with the mutable fields zeroed (RFC 4302 3.3.3.1):
- IPv4: TOS, flags + fragment offset, TTL, header checksum; options per Appendix A1 (the
  immutable ones kept, every other option zeroed as a whole; loose/strict source route:
  the sender puts the final destination in the destination field first, as Linux does).
- IPv6: traffic class, flow label, hop limit; in hop-by-hop and destination options, the
  data of options whose type has the "may change en route" bit (0x20). A routing header is
  only accepted with segments left = 0 (it is then as the receiver sees it); otherwise the
  packet is MALFORMED (no RFC 4302 3.3.3.1.2.2 reordering).
- AH: the ICV itself (not its padding).
The prepare kernels save the IP header chain before zeroing (`save`, [capacity, AH_SAVE])
and the received ICV (`icv_in`, [capacity, MAX_ICV]); the finish kernels put them back, so
transport output keeps TTL, TOS, options as they arrived or were sent.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .drops import Drop
from .kernels_esp import (accept_in_order, count_drop, ecn_decap, inner_packet, lookup_inbound,
                          selector_match, write_outer_ipv4, write_outer_ipv6)
from .kernels_ip import (JIT, P_AH, P_DSTOPTS, P_HOPOPT, P_IPV4, P_IPV6, P_NONE, P_ROUTING,
                         dscp_of, ecn_of, ipv4_set_checksum, move_bytes, parse_ip, ports_of,
                         rd32, wr16, wr32)
from .ops import (OP_AUTH_LEN, OP_AUTH_OFF, OP_DATA_LEN, OP_DATA_OFF, OP_ICV_OFF, OP_IV_OFF,
                  OP_SA, OP_SEQ)
from .replay import check, infer_seq
from .sa import MODE_TUNNEL
from .sad import CTR_BYTES, CTR_PACKETS

# RFC 4302 2: Next Header, Payload Len, Reserved (2), SPI (4), Sequence Number (4), then ICV
AH_FIXED = 12
#: Tuning bound, not a spec limit: bytes of IP header chain (IPv4 header with options, or
#: IPv6 header + extension headers before AH) saved per packet. Longer chains: MALFORMED.
AH_SAVE = 256

# RFC 4302 Appendix A1: IPv4 options included in the ICV as they are (full type byte).
# EOL (0) and NOP (1) are handled by the option walk itself.
IPOPT_SEC = 130      # Security (obsolete)
IPOPT_ESEC = 133     # Extended Security (obsolete)
IPOPT_CIPSO = 134    # Commercial Security
IPOPT_RA = 148       # Router Alert (RFC 2113)
IPOPT_SDMDD = 149    # Sender Directed Multi-Destination Delivery (RFC 1770)
IPOPT_LSRR = 131     # Loose Source Route: mutable but predictable
IPOPT_SSRR = 137     # Strict Source Route: mutable but predictable
IP6OPT_CHANGES = 0x20  # RFC 8200 4.2: option data may change en route

# zero_mutable modes
Z_CHECK = 0          # validate only, write nothing
Z_RECV = 1           # zero as the receiver sees the packet
Z_SEND = 2           # zero as the sender predicts the receiver will see it

D_NONE = np.uint8(0)
D_NO_SA = np.uint8(Drop.NO_SA)
D_REPLAY = np.uint8(Drop.REPLAY)
D_MALFORMED = np.uint8(Drop.MALFORMED)
D_POLICY_MISMATCH = np.uint8(Drop.POLICY_MISMATCH)
D_DUMMY = np.uint8(Drop.DUMMY)
D_SEQ_EXHAUSTED = np.uint8(Drop.SEQ_EXHAUSTED)

U32_MAX = np.uint64(0xFFFFFFFF)
U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------------------------------
# mutable fields (RFC 4302 3.3.3.1)
# ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def ah_len_for(icv, align):
    """AH header length: fixed part + ICV, padded to 4 (IPv4) or 8 (IPv6) bytes (RFC 4302 2.6)."""
    return (AH_FIXED + icv + align - 1) // align * align


@nb.njit(**JIT)
def ipv4_options(buf, o, ihl, mode):
    """Walk the IPv4 options at o+20..o+ihl; zero the mutable ones unless mode is Z_CHECK.

    Returns False on a malformed option list. With Z_SEND, a source-route option's last
    address (the final destination) is written into the destination field first.
    """
    p = o + 20
    end = o + ihl
    while p < end:
        t = np.int64(buf[p])
        if t == 0:                   # End of Option List: the rest is padding (kept)
            break
        if t == 1:                   # No Operation
            p += 1
            continue
        if p + 2 > end:
            return False
        ln = np.int64(buf[p + 1])
        if ln < 2 or p + ln > end:
            return False
        if not (t == IPOPT_SEC or t == IPOPT_ESEC or t == IPOPT_CIPSO or t == IPOPT_RA
                or t == IPOPT_SDMDD):
            if t == IPOPT_LSRR or t == IPOPT_SSRR:
                if ln < 7:
                    return False
                if mode == Z_SEND:
                    for j in range(4):
                        buf[o + 16 + j] = buf[p + ln - 4 + j]
            if mode != Z_CHECK:
                for j in range(ln):
                    buf[p + j] = 0
        p += ln
    return True


@nb.njit(**JIT)
def ipv6_ext(buf, o, hdr_end, mode):
    """Walk the IPv6 extension headers between o+40 and hdr_end (where AH starts); zero the
    data of options marked "may change en route" unless mode is Z_CHECK. Returns False if
    malformed, or on a routing header with segments left != 0."""
    nh = np.int64(buf[o + 6])
    p = o + 40
    while p < hdr_end:
        if p + 8 > hdr_end:
            return False
        hl = (np.int64(buf[p + 1]) + 1) * 8
        if p + hl > hdr_end:
            return False
        if nh == P_HOPOPT or nh == P_DSTOPTS:
            q = p + 2
            e = p + hl
            while q < e:
                t = np.int64(buf[q])
                if t == 0:           # Pad1
                    q += 1
                    continue
                if q + 2 > e:
                    return False
                ln = np.int64(buf[q + 1])
                if q + 2 + ln > e:
                    return False
                if (t & IP6OPT_CHANGES) and mode != Z_CHECK:
                    for j in range(ln):
                        buf[q + 2 + j] = 0
                q += 2 + ln
        elif nh == P_ROUTING:
            if buf[p + 3] != 0:      # segments left: not yet as the receiver will see it
                return False
        else:
            return False
        nh = np.int64(buf[p])
        p += hl
    return p == hdr_end


@nb.njit(**JIT)
def zero_mutable(buf, o, hdr_len, mode):
    """Zero the mutable fields of the IP header chain buf[o:o+hdr_len] (RFC 4302 3.3.3.1).
    With Z_CHECK only validate. Returns False if the chain is not acceptable."""
    if (buf[o] >> 4) == 4:
        if not ipv4_options(buf, o, hdr_len, mode):
            return False
        if mode != Z_CHECK:
            buf[o + 1] = 0           # TOS (DSCP + ECN)
            buf[o + 6] = 0           # flags + fragment offset
            buf[o + 7] = 0
            buf[o + 8] = 0           # TTL
            buf[o + 10] = 0          # header checksum
            buf[o + 11] = 0
        return True
    if not ipv6_ext(buf, o, o + hdr_len, mode):
        return False
    if mode != Z_CHECK:
        buf[o] = buf[o] & 0xF0       # traffic class, flow label
        buf[o + 1] = 0
        buf[o + 2] = 0
        buf[o + 3] = 0
        buf[o + 7] = 0               # hop limit
    return True


@nb.njit(**JIT)
def save_bytes(save, i, buf, o, n):
    for j in range(n):
        save[i, j] = buf[o + j]


@nb.njit(**JIT)
def restore_bytes(buf, o, save, i, n):
    for j in range(n):
        buf[o + j] = save[i, j]


# ---------------------------------------------------------------------------------------
# encrypt
# ---------------------------------------------------------------------------------------
@nb.njit(**JIT)
def frame_encrypt(buf, off, length, slot_start, slot_end, i, rec, addr, s, ops, save):
    """Insert AH into packet i for outbound AH SA s; returns a drop reason (0 = framed)."""
    o = off[i]
    ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, o, length[i])
    if not ok:
        return D_MALFORMED           # kernels_esp.prepare_encrypt already checked: defensive
    r = rec[s]
    if r.seq_out >= (U64_MAX if r.esn else U32_MAX):
        return D_SEQ_EXHAUSTED       # kernels_esp checked before this batch's AH rows moved it
    tunnel = r.mode == MODE_TUNNEL
    if tunnel:
        out_ver = np.int64(r.family)
        hdr = np.int64(20 if out_ver == 4 else 40)
    else:
        out_ver = np.int64(ver)
        hdr = hl
        if hdr > AH_SAVE or not zero_mutable(buf, o, hl, Z_CHECK):
            return D_MALFORMED
    ah_len = ah_len_for(np.int64(r.icv_len), 4 if out_ver == 4 else 8)
    grow = (hdr if tunnel else 0) + ah_len
    new_off = o - grow
    total = tot + grow
    if new_off < slot_start[i] or o + tot > slot_end[i]:
        return D_MALFORMED           # batch built without headroom: never write outside
    if total - (40 if out_ver == 6 else 0) > 0xFFFF:
        return D_MALFORMED           # would not fit the 16-bit length field
    seq = r.seq_out + np.uint64(1)
    rec[s].seq_out = seq
    if tunnel:
        a = new_off + hdr
        nh = P_IPV4 if ver == 4 else P_IPV6
        tos = (dscp_of(buf, o) << 2) | ecn_of(buf, o)   # RFC 6040 normal mode: copy ECN
        if out_ver == 4:
            df = ver == 6 or (buf[o + 6] & 0x40) != 0
            # the ICV covers the ID (RFC 4302 3.3.3.1.1.1) and a raw IP_HDRINCL socket
            # replaces an ID of 0: never send one (a gateway sends AH that way)
            ident = np.int64(seq & np.uint64(0xFFFF))
            write_outer_ipv4(buf, new_off, total, P_AH, tos, df, ident if ident else 1,
                             rec, s)
        else:
            write_outer_ipv6(buf, new_off, total - 40, P_AH, tos, addr, s)
    else:
        nh = np.int64(buf[nh_off])
        move_bytes(buf, new_off, o, hl)   # RFC 4302 3.1.1: AH right after the IP header(s)
        buf[nh_off - ah_len] = P_AH
        a = new_off + hl
        if ver == 4:
            wr16(buf, new_off + 2, total)
            ipv4_set_checksum(buf, new_off, hl)
        else:
            wr16(buf, new_off + 4, total - 40)
    buf[a] = nh
    buf[a + 1] = ah_len // 4 - 2     # RFC 4302 2.2: length in 32-bit words, minus 2
    buf[a + 2] = 0
    buf[a + 3] = 0
    wr32(buf, a + 4, np.int64(r.spi))
    wr32(buf, a + 8, np.int64(seq & U32_MAX))
    for j in range(AH_FIXED, ah_len):  # ICV (zero while computed) and padding (zero)
        buf[a + j] = 0
    save_bytes(save, i, buf, new_off, hdr)
    zero_mutable(buf, new_off, hdr, Z_SEND)
    off[i] = new_off
    length[i] = total
    ops[i, OP_SA] = s
    ops[i, OP_AUTH_OFF] = new_off
    ops[i, OP_AUTH_LEN] = total
    ops[i, OP_IV_OFF] = a
    ops[i, OP_DATA_OFF] = a + ah_len
    ops[i, OP_DATA_LEN] = new_off + total - (a + ah_len)
    ops[i, OP_ICV_OFF] = a + AH_FIXED
    ops[i, OP_SEQ] = np.int64(seq)
    return D_NONE


@nb.njit(**JIT)
def prepare_encrypt_ah(buf, off, length, slot_start, slot_end, drop, sa, n,
                       rec, addr, ops, save, ctr, gdrop):
    """Frame the rows kernels_esp.prepare_encrypt assigned to an AH SA and left unframed
    (policy lookup and sequence exhaustion were done there)."""
    for i in range(n):
        s = sa[i]
        if drop[i] or s < 0 or rec[s].proto != P_AH:
            continue
        reason = frame_encrypt(buf, off, length, slot_start, slot_end, i, rec, addr, s,
                               ops, save)
        if reason:
            drop[i] = reason
            count_drop(ctr, gdrop, s, reason)


@nb.njit(**JIT)
def finish_encrypt_ah(buf, off, length, drop, sa, n, rec, ops, save, ctr, gdrop):
    """Put back the mutable header fields zeroed for the ICV; count. (Crypto-pass drops were
    counted by kernels_esp.finish_encrypt.)"""
    for i in range(n):
        s = sa[i]
        if drop[i] or s < 0 or rec[s].proto != P_AH:
            continue
        o = off[i]
        restore_bytes(buf, o, save, i, ops[i, OP_IV_OFF] - o)
        ctr[s, CTR_PACKETS] += 1
        ctr[s, CTR_BYTES] += length[i]


# ---------------------------------------------------------------------------------------
# decrypt
# ---------------------------------------------------------------------------------------
@nb.njit(**JIT)
def frame_decrypt(buf, i, o, ver, end, a, nh_off, s, rec, top, bitmap, ops, aux, save,
                  icv_in):
    """Check AH packet i (outer header at o, AH at a) for inbound SA s, pre-check replay,
    save and zero the mutable fields and the ICV. Returns a drop reason (0 = ready)."""
    if a + AH_FIXED > end:
        return D_MALFORMED
    if s < 0:
        return D_NO_SA
    r = rec[s]
    icv = np.int64(r.icv_len)
    ah_len = (np.int64(buf[a + 1]) + 2) * 4
    # RFC 4302 2.6: ICV padded to 4 (IPv4) or 8 (IPv6) bytes. Over IPv4 an 8-byte-aligned
    # AH is accepted too: Linux pads IPv4 AH to 8 bytes unless the SA has `flag align4`.
    if ah_len != ah_len_for(icv, 8) and not (ver == 4 and ah_len == ah_len_for(icv, 4)):
        return D_MALFORMED
    if a + ah_len > end:
        return D_MALFORMED
    hdr = a - o
    if hdr > AH_SAVE or not zero_mutable(buf, o, hdr, Z_CHECK):
        return D_MALFORMED
    seq_lo = np.uint64(rd32(buf, a + 8))
    # the real edge is right within a round: kernels_esp.prepare_decrypt cuts the batch
    # before any packet whose ESN high bits depend on earlier packets of the batch
    seq = infer_seq(top[s], r.window, r.esn, seq_lo)
    if r.integrity and r.window > 0:
        if (not r.esn and seq_lo == 0) or not check(bitmap, r.bm_base, r.bm_words,
                                                    top[s], r.window, seq):
            return D_REPLAY
    save_bytes(save, i, buf, o, hdr)
    save_bytes(icv_in, i, buf, a + AH_FIXED, icv)
    for j in range(icv):             # the ICV, not its padding (RFC 4302 3.4.4)
        buf[a + AH_FIXED + j] = 0
    zero_mutable(buf, o, hdr, Z_RECV)
    ops[i, OP_SA] = s
    ops[i, OP_AUTH_OFF] = o
    ops[i, OP_AUTH_LEN] = end - o
    ops[i, OP_IV_OFF] = a
    ops[i, OP_DATA_OFF] = a + ah_len
    ops[i, OP_DATA_LEN] = end - (a + ah_len)
    ops[i, OP_ICV_OFF] = a + AH_FIXED
    ops[i, OP_SEQ] = np.int64(seq)
    aux[i, 0] = o
    aux[i, 1] = nh_off
    aux[i, 2] = 0
    return D_NONE


@nb.njit(**JIT)
def prepare_decrypt_ah(buf, off, length, drop, sa, n, rec, addr, in_hash, top, bitmap,
                       ops, aux, save, icv_in, ctr, gdrop):
    """The rows kernels_esp.prepare_decrypt left alive but unframed are protocol 51 (their
    outer header was validated there, length[i] trimmed to the IP length)."""
    for i in range(n):
        if drop[i] or ops[i, OP_SA] >= 0:
            continue
        o = off[i]
        end = o + length[i]
        ok, ver, hl, tot, proto, a, nh_off = parse_ip(buf, o, length[i])
        if not ok or proto != P_AH:
            continue                 # not ours (kernels_esp decides everything else)
        s = np.int64(-1)
        if a + AH_FIXED <= end:
            dst_off = o + 16 if ver == 4 else o + 24
            s = lookup_inbound(rec, addr, in_hash, rd32(buf, a + 4), buf, dst_off, ver, P_AH)
            if s >= 0 and rec[s].outbound:
                s = -1
        if s >= 0:
            sa[i] = s
        reason = frame_decrypt(buf, i, o, ver, end, a, nh_off, s, rec, top, bitmap, ops,
                               aux, save, icv_in)
        if reason:
            drop[i] = reason
            count_drop(ctr, gdrop, s if reason != D_NO_SA else -1, reason)


@nb.njit(**JIT)
def decap(buf, i, mode, ops, aux):
    """Remove AH from a verified packet: (reason, new_off, new_len)."""
    o = aux[i, 0]
    a = ops[i, OP_IV_OFF]
    data = ops[i, OP_DATA_OFF]
    dlen = ops[i, OP_DATA_LEN]
    nh = np.int64(buf[a])
    if nh == P_NONE:
        return D_DUMMY, o, np.int64(0)   # consumed silently, as for ESP
    if mode == MODE_TUNNEL:
        if nh != P_IPV4 and nh != P_IPV6:
            return D_MALFORMED, o, np.int64(0)
        ilen, _, _ = inner_packet(buf, data, dlen, 4 if nh == P_IPV4 else 6)
        if ilen < 0 or not ecn_decap(buf, o, data):
            return D_MALFORMED, o, np.int64(0)
        return D_NONE, data, ilen
    hdr = a - o
    ah_len = data - a
    new_off = o + ah_len
    move_bytes(buf, new_off, o, hdr)
    buf[aux[i, 1] + ah_len] = nh
    new_len = hdr + dlen
    if (buf[new_off] >> 4) == 4:
        wr16(buf, new_off + 2, new_len)
        ipv4_set_checksum(buf, new_off, hdr)
    else:
        wr16(buf, new_off + 4, new_len - 40)
    return D_NONE, new_off, new_len


@nb.njit(**JIT)
def finish_decrypt_ah(buf, off, length, drop, sa, n, rec, addr, top, bitmap, ops, aux,
                      save, icv_in, ctr, gdrop):
    """In order: restore the zeroed fields, advance replay windows, strip AH or
    decapsulate, check selectors. (Crypto-pass drops were counted by kernels_esp.)"""
    for i in range(n):
        s = np.int64(ops[i, OP_SA])
        if s < 0 or rec[s].proto != P_AH:
            continue
        r = rec[s]
        o = aux[i, 0]
        a = ops[i, OP_IV_OFF]
        restore_bytes(buf, o, save, i, a - o)          # dropped packets too: as received
        restore_bytes(buf, a + AH_FIXED, icv_in, i, np.int64(r.icv_len))
        if drop[i]:
            continue
        reason = accept_in_order(rec, top, bitmap, s, np.uint64(ops[i, OP_SEQ]))
        if reason:
            drop[i] = reason
            count_drop(ctr, gdrop, s, reason)
            continue
        reason, new_off, new_len = decap(buf, i, r.mode, ops, aux)
        if reason == 0:
            ok, ver, hl2, tot2, proto2, l4b, nhb = parse_ip(buf, new_off, new_len)
            if ok:
                sport, dport = ports_of(buf, l4b, new_off + new_len, proto2)
            else:
                ver = buf[new_off] >> 4
                proto2 = 0
                sport, dport = np.int64(0), np.int64(0)
            if not selector_match(rec, addr, s, buf, new_off, ver, proto2, sport, dport):
                reason = D_POLICY_MISMATCH
        if reason:
            drop[i] = reason
            count_drop(ctr, gdrop, s, reason)
            continue
        off[i] = new_off
        length[i] = new_len
        ctr[s, CTR_PACKETS] += 1
        ctr[s, CTR_BYTES] += new_len
