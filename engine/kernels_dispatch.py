"""Numba kernels of the SPU dispatcher (engine/spu.py) and its workers (engine/spu_worker.py).

The dispatcher classifies every packet of a batch to the physical SPU that owns its SA:

    decrypt: outer IP / ESP / ESP-in-UDP / AH header -> (SPI, dst, proto) -> SA slot
    encrypt: the first outbound SA whose selector matches (or the pinned batch.sa[i]),
             through the SPD's compiled policy and flow cache (kernels_spd)
    then:    SA slot -> logical SPU (sa_logical) -> physical SPU (owner)

A packet that belongs to no SA is dropped here with the reason the engine itself would
give (the same checks, in the same order, as the head of kernels_esp.prepare_decrypt /
prepare_encrypt and kernels_ah.prepare_decrypt_ah), so a run over N workers drops and
counts exactly what one engine does. Everything SA-specific after the lookup (replay,
lengths, ICV, ...) is the owner's job.

Packets never move: the batch lives in shared memory and each worker gets the indices of
its packets (`split`), gathers their metadata into a private view (`gather`), runs the
engine on the shared buffer, and writes the metadata back (`scatter`). Slots are disjoint
and 64-byte aligned, so workers never write the same cache line.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.core.extending import intrinsic

from .drops import Drop
from .kernels_esp import find_inbound, ipv4_fragment, is_encap_port
from .kernels_ip import (JIT, P_AH, P_ESP, P_UDP, ipv4_checksum_ok, parse_ip, ports_of, rd16,
                         rd32)
from .kernels_spd import lookup_outbound

D_NO_POLICY = np.uint8(Drop.NO_POLICY)
D_NO_SA = np.uint8(Drop.NO_SA)
D_MALFORMED = np.uint8(Drop.MALFORMED)
D_KEEPALIVE = np.uint8(Drop.KEEPALIVE)

#: Per-packet mark (batch.drop) for a packet that was inside an SPU when it died. Not a
#: Drop reason: such packets are counted as `lost`, beside `dropped` (engine/spu.py).
LOST = np.uint8(255)
AH_FIXED = 12         # RFC 4302 2: the AH header up to the ICV


@nb.njit(**JIT)
def classify_decrypt(buf, off, length, drop, sa, n, rec, addr, in_hash, encap_ports,
                     sa_logical, owner, dest):
    """dest[i] = physical SPU of packet i's inbound SA (sa[i] = its slot, as the engine's
    own lookup would set it), or -1 (drop[i] says why)."""
    for i in range(n):
        dest[i] = -1
        if drop[i]:
            continue
        o = off[i]
        ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, o, length[i])
        if ok and ver == 4 and not ipv4_checksum_ok(buf, o, hl):
            ok = False
        if not ok:
            drop[i] = D_MALFORMED
            continue
        end = o + tot
        dst_off = o + 16 if ver == 4 else o + 24
        if proto == P_AH:
            if l4 + AH_FIXED > end:
                drop[i] = D_MALFORMED
                continue
            s = find_inbound(rec, addr, in_hash, rd32(buf, l4 + 4), buf, dst_off, ver, P_AH)
            if s < 0 or rec[s].outbound:
                drop[i] = D_NO_SA
                continue
            sa[i] = s
            dest[i] = owner[sa_logical[s]]
            continue
        encap = 0
        esp = l4
        if proto == P_UDP:
            if l4 + 8 > end or not is_encap_port(encap_ports, rd16(buf, l4 + 2)):
                drop[i] = D_NO_SA
                continue
            if end - (l4 + 8) == 1 and buf[l4 + 8] == 0xFF:
                drop[i] = D_KEEPALIVE
                continue
            esp = l4 + 8
            if end - esp >= 4 and rd32(buf, esp) == 0:
                drop[i] = D_NO_SA
                continue
            encap = 1
        elif proto != P_ESP:
            drop[i] = D_NO_SA
            continue
        if esp + 8 > end:
            drop[i] = D_MALFORMED
            continue
        s = find_inbound(rec, addr, in_hash, rd32(buf, esp), buf, dst_off, ver, P_ESP)
        if s < 0 or rec[s].encap != encap or rec[s].outbound:
            drop[i] = D_NO_SA
            continue
        sa[i] = s
        dest[i] = owner[sa_logical[s]]


@nb.njit(**JIT)
def classify_encrypt(buf, off, length, drop, sa, n, rec, pol_i, pol_a, flow_keys, flow_slots,
                     sa_logical, owner, dest):
    """dest[i] = physical SPU of the outbound SA packet i goes to (written to sa[i]), or -1."""
    for i in range(n):
        dest[i] = -1
        if drop[i]:
            continue
        o = off[i]
        ok, ver, hl, tot, proto, l4, nh_off = parse_ip(buf, o, length[i])
        if not ok:
            # IPv4 fragments as kernels_esp.prepare_encrypt takes them (the owner decides)
            ok, hl, tot, proto, l4 = ipv4_fragment(buf, o, length[i])
            ver = 4
        if not ok:
            drop[i] = D_MALFORMED
            continue
        sport, dport = ports_of(buf, l4, o + tot, proto) if l4 >= 0 else (0, 0)
        s = np.int64(sa[i])
        if s < 0:
            s = lookup_outbound(pol_i, pol_a, flow_keys, flow_slots, buf, o, ver, proto, sport,
                                dport)
        if s < 0 or s >= rec.shape[0] or not rec[s].active or not rec[s].outbound:
            drop[i] = D_NO_POLICY
            continue
        sa[i] = s
        dest[i] = owner[sa_logical[s]]


@nb.njit(**JIT)
def split(dest, n, counts, starts, order):
    """Group packet indices by SPU, keeping input order inside each group (per-SA order).

    counts[w] = packets for SPU w; order[starts[w]:starts[w] + counts[w]] their indices."""
    counts[:] = 0
    for i in range(n):
        if dest[i] >= 0:
            counts[dest[i]] += 1
    acc = 0
    for w in range(counts.shape[0]):
        starts[w] = acc
        acc += counts[w]
    for w in range(counts.shape[0]):
        counts[w] = 0
    for i in range(n):
        d = dest[i]
        if d >= 0:
            order[starts[d] + counts[d]] = i
            counts[d] += 1


@nb.njit(**JIT)
def _slot_bytes(ln, headroom, tailroom, align):
    """PacketBatch's slot size for a packet of ln bytes (align: a power of two; a mask,
    not a division: 6 to 2 us per 1024-packet batch)."""
    return (headroom + ln + tailroom + align - 1) & -align


@nb.njit(**JIT)
def check_arrivals(n, arrive_from, arrival_size, length, budget, headroom, tailroom, align,
                   drop):
    """Whether ring batch packets 0..n-1 wait in the arrival area (arrive_from[0] >= 0:
    then every one must; with arrive_from[0] < 0 none may). A packet that breaks that
    rule, whose bytes lie outside the arrival area, or whose slot would take the batch
    past `budget` bytes is dropped MALFORMED and marked as arrived (-1, length 0):
    nothing is copied for it. Checked here, before any kernel reads the area with bounds
    checks off."""
    waiting = n > 0 and arrive_from[0] >= 0
    used = 0
    for i in range(n):
        a = arrive_from[i]
        ln = length[i]
        if waiting:
            bad = a < 0 or ln < 0 or a + ln > arrival_size
            if not bad:
                need = _slot_bytes(ln, headroom, tailroom, align)
                bad = used + need > budget
                if not bad:
                    used += need
        else:
            bad = a >= 0
        if bad:
            arrive_from[i] = -1
            length[i] = 0
            drop[i] = D_MALFORMED
    return waiting


@nb.njit(**JIT)
def _place(i, used, length, off, slot_start, slot_end, headroom, tailroom, align):
    need = _slot_bytes(length[i], headroom, tailroom, align)
    slot_start[i] = used
    off[i] = used + headroom
    slot_end[i] = used + need
    return used + need


@nb.njit(**JIT)
def lay_out_by_owner(n, dest, counts, starts, order, length, off, slot_start, slot_end,
                     headroom, tailroom, align, region):
    """Slots for a batch whose packets wait in the arrival area, each SPU's packets
    side by side in a region of their own (starting on a `region` boundary), the
    dispatcher's drops last. Interleaved, two cores writing neighbouring slots pull each
    other's cache lines (the hardware prefetchers read ahead across slot edges): with
    the dispatcher copying every packet in, 2-SPU encrypt ran 150-163 ns per 1400-byte
    packet interleaved and 145-148 grouped, and its slow stretches (the VM's vCPUs
    placed far apart) went from 420-490 ns to 160-230. check_arrivals keeps the total
    within the budget; the buffer has room for the regions' alignment on top
    (SpuCluster). Returns the bytes used."""
    used = 0
    for w in range(counts.shape[0]):
        if counts[w] == 0:
            continue
        used = ((used + region - 1) // region) * region
        for j in range(starts[w], starts[w] + counts[w]):
            used = _place(order[j], used, length, off, slot_start, slot_end, headroom,
                          tailroom, align)
    for i in range(n):
        if dest[i] < 0:
            used = _place(i, used, length, off, slot_start, slot_end, headroom, tailroom,
                          align)
    return used


@nb.njit(**JIT)
def _arrive_one(i, arrive_from, arrival, buf, off, length):
    a = arrive_from[i]
    if a >= 0:
        # unsigned indices, so the copy vectorises (kernels_batch.place_packets)
        d, f = np.uint64(off[i]), np.uint64(a)
        for j in range(np.uint64(length[i])):
            buf[d + j] = arrival[f + j]


@nb.njit(**JIT)
def arrive(idx, m, arrive_from, arrival, buf, off, length):
    """Copy packets idx[0:m] from the arrival area into their slots (run by their owner
    SPU, so their bytes are written on the core that works on them)."""
    for j in range(m):
        _arrive_one(idx[j], arrive_from, arrival, buf, off, length)


@nb.njit(**JIT)
def arrive_rows(m, r_from, arrival, buf, r_off, r_length):
    """arrive() for a worker's packets, from its rows (hand_over)."""
    for j in range(m):
        _arrive_one(j, r_from, arrival, buf, r_off, r_length)


@nb.njit(**JIT)
def arrive_all(n, arrive_from, arrival, buf, off, length):
    """arrive() for packets 0..n-1."""
    for i in range(n):
        _arrive_one(i, arrive_from, arrival, buf, off, length)


@nb.njit(**JIT)
def arrive_dropped(n, dest, arrive_from, arrival, buf, off, length):
    """Copy in the packets no SPU gets (dropped by the dispatcher), so the finished batch
    holds every packet's bytes."""
    for i in range(n):
        if dest[i] < 0:
            _arrive_one(i, arrive_from, arrival, buf, off, length)


@nb.njit(**JIT)
def gather(idx, m, off, length, slot_start, slot_end, drop, sa,
           v_off, v_length, v_slot_start, v_slot_end, v_drop, v_sa):
    """The metadata of an SPU's m packets of a shared batch, side by side (the bytes
    stay)."""
    for j in range(m):
        i = idx[j]
        v_off[j] = off[i]
        v_length[j] = length[i]
        v_slot_start[j] = slot_start[i]
        v_slot_end[j] = slot_end[i]
        v_drop[j] = drop[i]
        v_sa[j] = sa[i]


@nb.njit(**JIT)
def hand_over(idx, m, off, length, slot_start, slot_end, drop, sa, arrive_from, start,
              r_off, r_length, r_slot_start, r_slot_end, r_drop, r_sa, r_from):
    """gather() into a worker's rows from `start` on (run by the dispatcher), with where
    each packet waits in the arrival area (-1: in the batch)."""
    gather(idx, m, off, length, slot_start, slot_end, drop, sa, r_off[start:],
           r_length[start:], r_slot_start[start:], r_slot_end[start:], r_drop[start:],
           r_sa[start:])
    for j in range(m):
        r_from[start + j] = arrive_from[idx[j]]


@nb.njit(**JIT)
def scatter(idx, m, v_off, v_length, v_drop, v_sa, off, length, drop, sa):
    """Write a worker's results back into the shared batch."""
    for j in range(m):
        i = idx[j]
        off[i] = v_off[j]
        length[i] = v_length[j]
        drop[i] = v_drop[j]
        sa[i] = v_sa[j]


@nb.njit(**JIT)
def account(dest, drop, n, spu_in, spu_out, spu_drop, spu_lost, disp_drop, sa, sa_logical,
            logical_load):
    """Counters of one finished batch: per SPU (packets it was given, written, dropped by
    reason, lost with it), the dispatcher's own drops (dest -1), and packets per logical
    SPU (for balancing)."""
    for i in range(n):
        d = dest[i]
        r = drop[i]
        if d < 0:
            if r < disp_drop.shape[0]:
                disp_drop[r] += 1
            continue
        s = sa[i]
        if 0 <= s < sa_logical.shape[0]:
            logical_load[sa_logical[s]] += 1
        spu_in[d] += 1
        if r == 0:
            spu_out[d] += 1
        elif r == LOST:
            spu_lost[d] += 1
        elif r < spu_drop.shape[1]:
            spu_drop[d, r] += 1



# -- the run queue's words (engine/spu_worker.py), shared by two processes ---------------------
@intrinsic
def _fence(typingctx):
    """A full memory barrier (LLVM `fence seq_cst`: mfence on x86, dmb ish on Arm)."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


@nb.njit(**JIT)
def publish(ctl, i, value):
    """ctl[i] = value, after every store before it (a request, results) and before every
    load after it (the other side's ASLEEP word): Arm reorders both, x86 the second."""
    _fence()
    ctl[i] = value
    _fence()


@nb.njit(**JIT)
def observe(ctl, i):
    """ctl[i], read before every load after it (the request or results it announces)."""
    value = ctl[i]
    _fence()
    return value
