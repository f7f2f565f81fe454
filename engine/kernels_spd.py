"""The outbound policy lookup (SPD): which SA an outbound packet goes to.

The SPD is the outbound SAs in policy order; the first whose selector matches the packet
wins (RFC 4301 4.4.1: ordered, first match). engine/sad.py compiles it on every install
and remove (sad.compile_policy) into

- pol_i [policies, POL_I_COLS] int64: slot, has-selector, family, protocol, ports;
- pol_a [policies, POL_A_COLS] uint64: source and destination network and mask as
  128-bit values (IPv4 in the top 32 bits), so a policy is a few integer compares;
- a flow cache in front of the walk (flow_keys, flow_slots): the walk costs about half a
  nanosecond per policy it passes, the cache a hash and one compare (per packet here,
  walk / cache: 4 policies 10 / 12 ns, 8: 13 / 12, 64: 47 / 13, 256: 175 / 17). Its key
  is everything the walk reads (family, addresses, protocol, ports), so a hit answers
  exactly as the walk would, "no policy" included; it lives as long as the compiled
  policy (a new one at every install and remove). Two ways per set, the newer first: two
  flows that share a set do not evict each other. Flows that a sender makes collide only
  cost the walk again, never a wrong answer. Below FLOW_MIN_POLICIES it is empty (the
  walk is cheaper).

kernels_esp.prepare_encrypt and the SPU dispatcher (kernels_dispatch.classify_encrypt)
both look up through `lookup_outbound`; kernels_esp.selector_match, the same rule over
the SA records, checks decapsulated packets against their SA's selector and is the
reference the tests hold this to.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .kernels_ip import JIT, rd32

POL_SLOT, POL_HAS_SEL, POL_FAMILY, POL_PROTO, POL_SPORT, POL_DPORT = range(6)
POL_I_COLS = 6
POL_A_COLS = 8      # src net hi/lo, src mask hi/lo, dst net hi/lo, dst mask hi/lo

FLOW_SETS = 4096
FLOW_KEY = 5          # src hi/lo, dst hi/lo, family << 40 | proto << 32 | sport << 16 | dport
FLOW_EMPTY = -2       # a cache slot's value before it holds an answer (-1: "no policy")
FLOW_MIN_POLICIES = 8

_U32 = np.uint64(32)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_SHIFT = np.uint64(29)


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
    return np.int64(-1)


@nb.njit(inline="always", **JIT)
def cached_match(pol_i, pol_a, flow_keys, flow_slots, ver, s0, s1, d0, d1, proto, sport,
                 dport):
    """first_match through the flow cache, when the compiled policy has one."""
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


@nb.njit(inline="always", **JIT)
def lookup_outbound(pol_i, pol_a, flow_keys, flow_slots, buf, o, ver, proto, sport, dport):
    """The SA slot of the first policy that matches the IP packet at o (version ver, upper
    protocol and ports already parsed), or -1."""
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
    return cached_match(pol_i, pol_a, flow_keys, flow_slots, ver, s0, s1, d0, d1, proto,
                        sport, dport)
