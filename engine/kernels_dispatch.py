"""Numba kernels of the SPU dispatcher (engine/spu.py) and its workers (engine/spu_worker.py).

The dispatcher classifies every packet of a batch to the physical SPU that owns its SA:

    decrypt: outer IP / ESP / ESP-in-UDP / AH header -> (SPI, dst, proto) -> SA slot
    encrypt: the first outbound SA whose selector matches (or the pinned batch.sa[i]),
             over a compiled copy of the selectors (compile_policy)
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
from .sad import ADDR_SEL_DST, ADDR_SEL_SRC

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


# compiled policy (compile_policy): one row per outbound SA, in policy order
POL_SLOT, POL_HAS_SEL, POL_FAMILY, POL_PROTO, POL_SPORT, POL_DPORT = range(6)
POL_I_COLS = 6
POL_A_COLS = 8      # src net hi/lo, src mask hi/lo, dst net hi/lo, dst mask hi/lo
_U32 = np.uint64(32)
_M64 = (1 << 64) - 1

# The flow cache in front of the first-match walk: the walk costs about half a nanosecond
# per policy it passes, the cache a hash and one compare. Its key is everything the walk
# reads (family, addresses, protocol, ports), so a hit gives exactly what the walk would,
# "no policy" included; it lives as long as the compiled policy it caches (a new one at
# every install and remove). Two ways per set, the newer first: two flows that share a
# set do not evict each other. Flows a sender makes collide only cost the walk again,
# never a wrong answer.
FLOW_SETS = 4096
FLOW_KEY = 5          # src hi/lo, dst hi/lo, family << 40 | proto << 32 | sport << 16 | dport
FLOW_EMPTY = -2       # a slot's value before it holds an answer (-1: "no policy")
#: fewer policies than this: no cache (per packet here, walk / cache: 4 policies 10 / 12 ns,
#: 8: 13 / 12, 64: 47 / 13, 256: 175 / 17)
FLOW_MIN_POLICIES = 8


def compile_policy(rec, addr, spd) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The outbound selectors of an SADatabase (rec, addr, spd) as masks over 128-bit
    addresses (IPv4 in the top 32 bits, as engine/sad.py stores it), so the first-match
    walk costs a few integer compares per SA, and an empty flow cache for them
    (pol_i, pol_a, flow_keys, flow_slots). Same rule as kernels_esp.selector_match
    (a test checks it); built on the control path, at every install and remove."""
    pol_i = np.zeros((len(spd), POL_I_COLS), np.int64)
    pol_a = np.zeros((len(spd), POL_A_COLS), np.uint64)
    for k, s in enumerate(spd):
        r = rec[s]
        pol_i[k] = (s, r["has_sel"], r["sel_family"], r["sel_proto"], r["sel_sport"],
                    r["sel_dport"])
        for col, base, plen in ((0, ADDR_SEL_SRC, int(r["sel_src_len"])),
                                (4, ADDR_SEL_DST, int(r["sel_dst_len"]))):
            value = int.from_bytes(bytes(addr[s, base:base + 16]), "big")
            mask = ((1 << plen) - 1) << (128 - plen)
            net = value & mask
            pol_a[k, col:col + 4] = (net >> 64, net & _M64, mask >> 64, mask & _M64)
    sets = FLOW_SETS if len(spd) >= FLOW_MIN_POLICIES else 0
    return (pol_i, pol_a, np.zeros((2 * sets, FLOW_KEY), np.uint64),
            np.full(2 * sets, FLOW_EMPTY, np.int32))


@nb.njit(inline="always", **JIT)
def rd64(buf, o):
    v = np.uint64(0)
    for j in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[o + j])
    return v


@nb.njit(inline="always", **JIT)
def policy_match(pol_i, pol_a, k, ver, s0, s1, d0, d1, proto, sport, dport):
    if not pol_i[k, POL_HAS_SEL]:
        return True
    if pol_i[k, POL_FAMILY] != ver:
        return False
    if (s0 & pol_a[k, 2]) != pol_a[k, 0] or (s1 & pol_a[k, 3]) != pol_a[k, 1]:
        return False
    if (d0 & pol_a[k, 6]) != pol_a[k, 4] or (d1 & pol_a[k, 7]) != pol_a[k, 5]:
        return False
    p = pol_i[k, POL_PROTO]
    if p != 0 and p != proto:
        return False
    p = pol_i[k, POL_SPORT]
    if p >= 0 and p != sport:
        return False
    p = pol_i[k, POL_DPORT]
    if p >= 0 and p != dport:
        return False
    return True


@nb.njit(inline="always", **JIT)
def first_match(pol_i, pol_a, ver, s0, s1, d0, d1, proto, sport, dport):
    """The slot of the first policy that matches, or -1."""
    for k in range(pol_i.shape[0]):
        if policy_match(pol_i, pol_a, k, ver, s0, s1, d0, d1, proto, sport, dport):
            return pol_i[k, POL_SLOT]
    return -1


_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_SHIFT = np.uint64(29)


@nb.njit(inline="always", **JIT)
def cached_match(pol_i, pol_a, flow_keys, flow_slots, ver, s0, s1, d0, d1, proto, sport,
                 dport):
    """first_match through the flow cache (compile_policy) when it has one."""
    sets = flow_slots.shape[0] >> 1
    if sets == 0:
        return first_match(pol_i, pol_a, ver, s0, s1, d0, d1, proto, sport, dport)
    meta = (np.uint64(ver) << np.uint64(40)) | (np.uint64(proto) << _U32) | \
        (np.uint64(sport) << np.uint64(16)) | np.uint64(dport)
    h = (s0 ^ (s1 * _MIX2)) * _MIX1
    h = (h ^ (h >> _SHIFT) ^ d0) * _MIX2
    h = (h ^ (h >> _SHIFT) ^ d1 ^ (meta * _MIX1)) * _MIX1
    e = np.int64((h >> _U32) & np.uint64(sets - 1)) * 2
    for w in range(2):
        if flow_slots[e + w] != FLOW_EMPTY and flow_keys[e + w, 0] == s0 and \
                flow_keys[e + w, 1] == s1 and flow_keys[e + w, 2] == d0 and \
                flow_keys[e + w, 3] == d1 and flow_keys[e + w, 4] == meta:
            return np.int64(flow_slots[e + w])
    s = first_match(pol_i, pol_a, ver, s0, s1, d0, d1, proto, sport, dport)
    for j in range(FLOW_KEY):                   # the newer answer first, the older second
        flow_keys[e + 1, j] = flow_keys[e, j]
    flow_slots[e + 1] = flow_slots[e]
    flow_keys[e, 0] = s0
    flow_keys[e, 1] = s1
    flow_keys[e, 2] = d0
    flow_keys[e, 3] = d1
    flow_keys[e, 4] = meta
    flow_slots[e] = s
    return np.int64(s)


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
            if ver == 4:
                s0 = np.uint64(rd32(buf, o + 12)) << _U32
                d0 = np.uint64(rd32(buf, o + 16)) << _U32
                s1 = np.uint64(0)
                d1 = np.uint64(0)
            else:
                s0 = rd64(buf, o + 8)
                s1 = rd64(buf, o + 16)
                d0 = rd64(buf, o + 24)
                d1 = rd64(buf, o + 32)
            s = cached_match(pol_i, pol_a, flow_keys, flow_slots, ver, s0, s1, d0, d1, proto,
                             sport, dport)
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
def gather(idx, m, off, length, slot_start, slot_end, drop, sa,
           v_off, v_length, v_slot_start, v_slot_end, v_drop, v_sa):
    """A worker's view of its m packets of a shared batch (metadata only, bytes stay)."""
    for j in range(m):
        i = idx[j]
        v_off[j] = off[i]
        v_length[j] = length[i]
        v_slot_start[j] = slot_start[i]
        v_slot_end[j] = slot_end[i]
        v_drop[j] = drop[i]
        v_sa[j] = sa[i]


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
