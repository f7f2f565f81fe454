"""`spu bench --profile`: the engine's time per packet split into stages, from outside.

Nothing in the engine is instrumented: the kernels the engine runs are never changed or
recompiled for profiling, so profiling off costs nothing. Instead each stage is a
difference of medians between runs that stop at a stage boundary, on the same batch
restored before every round (bench/runner.py CaseData):

    prefix kernels (here)    the start of prepare_encrypt / prepare_decrypt, built from the
                             same inlined helpers (parse_ip, find_inbound, lookup_outbound,
                             infer_seq, check, accept_in_order): they stop after the SA
                             lookup, or after the replay pre-check (decrypt) / the sequence
                             number (encrypt), and write nothing the engine reads but the
                             SPD's flow cache (exact: warm, as it is when streaming)
    passes (bench/ceiling)   prepare, crypto and finish called one by one
    empty calls              each of those with a batch count of 0: what one Python ->
                             Numba/Cython call costs, argument unboxing included
    the whole call           Engine.encrypt / Engine.decrypt
    filling                  PacketBatch.clear + add_many of the workload packets

Stages (ns/packet; each time below is a median over rounds, per packet, call cost removed):

    parse_lookup   prefix up to the SA lookup (decrypt: parse, IPv4 checksum, UDP-encap
                   and SPI lookup; encrypt: parse, ports, SPD walk)
    replay         decrypt: prefix up to the replay pre-check minus parse_lookup, plus the
                   in-order window advance (accept_in_order alone over the op rows);
                   encrypt: sequence-number check and increment
    crypto         the crypto pass (Engine.esp_crypto)
    headers        the rest of prepare and finish: encapsulation (outer header, ESP header,
                   padding, trailer, op rows) or decapsulation (trailer and padding checks,
                   inner-packet and ECN checks, selector check), and the per-SA counters
    dispatch       the whole call minus the passes' work: Python glue in Engine.encrypt/
                   decrypt plus the per-call cost of each pass (the empty calls)
    io             filling a batch with the workload (PacketBatch.add_many)

By construction parse_lookup + replay + crypto + headers + dispatch = the whole call, and
adding io gives `total_ns`. A difference that comes out negative (noise: the parts are
separate medians) is reported as 0 and its size added to `clamped_ns`, so that
|sum of stages - total_ns| <= clamped_ns always holds; a large clamped_ns says the split
is not to be trusted for that case. The whole call measured here (`engine_ns`) is from
the profile's own rounds and should be close to the table's ns/packet.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numba as nb
import numpy as np

from engine.batch import PacketBatch
from engine.kernels_esp import U32_MAX, U64_MAX, accept_in_order, find_inbound, is_encap_port
from engine.kernels_ip import (JIT, P_AH, P_ESP, P_UDP, csum_fold, ipv4_sum, parse_ip,
                               ports_of, rd16, rd32)
from engine.kernels_spd import lookup_outbound
from engine.ops import OP_SA, OP_SEQ
from engine.replay import check, infer_seq

from .ceiling import Passes

STAGES = ("parse_lookup", "replay", "crypto", "headers", "dispatch", "io")


# ---------------------------------------------------------------------------------------
# prefix kernels: profiling only, never called by the engine
# ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def _dec_lookup(buf, off, length, drop, i, rec, addr, in_hash, encap_ports):
    """prepare_decrypt for packet i up to its SA lookup: (SA slot or -1, ESP offset)."""
    if drop[i]:
        return np.int64(-1), np.int64(-1)
    o = off[i]
    ok, ver, hl, tot, proto, l4, _nh = parse_ip(buf, o, length[i])
    if ok and ver == 4 and csum_fold(ipv4_sum(buf, o, hl)) != 0:
        ok = False
    if not ok:
        return np.int64(-1), np.int64(-1)
    end = o + tot
    esp = l4
    encap = 0
    if proto == P_UDP:
        if l4 + 8 > end or not is_encap_port(encap_ports, rd16(buf, l4 + 2)):
            return np.int64(-1), np.int64(-1)
        esp = l4 + 8
        encap = 1
    elif proto != P_ESP:
        return np.int64(-1), np.int64(-1)
    if esp + 8 > end:
        return np.int64(-1), np.int64(-1)
    dst_off = o + 16 if ver == 4 else o + 24
    s = find_inbound(rec, addr, in_hash, rd32(buf, esp), buf, dst_off, ver, P_ESP)
    if s < 0 or rec[s].encap != encap or rec[s].outbound:
        return np.int64(-1), np.int64(-1)
    return np.int64(s), esp


@nb.njit(**JIT)
def dec_upto_lookup(buf, off, length, drop, n, rec, addr, in_hash, encap_ports, out):
    """Stops after the SA lookup; out[i] = the SA slot (or -1)."""
    for i in range(n):
        s, _esp = _dec_lookup(buf, off, length, drop, i, rec, addr, in_hash, encap_ports)
        out[i] = s


@nb.njit(**JIT)
def dec_upto_replay(buf, off, length, drop, n, rec, addr, in_hash, encap_ports, top, bitmap,
                    out):
    """Stops after the replay pre-check (read-only); out[i] = the SA slot, or -1 when the
    packet would be dropped."""
    for i in range(n):
        s, esp = _dec_lookup(buf, off, length, drop, i, rec, addr, in_hash, encap_ports)
        if s >= 0:
            r = rec[s]
            seq_lo = np.uint64(rd32(buf, esp + 4))
            seq = infer_seq(top[s], r.window, r.esn, seq_lo)
            if r.integrity and r.window > 0 and (
                    (not r.esn and seq_lo == 0)
                    or not check(bitmap, r.bm_base, r.bm_words, top[s], r.window, seq)):
                s = -1
        out[i] = s


@nb.njit(**JIT)
def dec_replay_advance(drop, n, rec, top, bitmap, ops):
    """finish_decrypt's in-order replay advance alone, over op rows from prepare+crypto
    (changes the window: the caller puts it back)."""
    for i in range(n):
        s = np.int64(ops[i, OP_SA])
        if drop[i] or s < 0 or rec[s].proto == P_AH:
            continue
        accept_in_order(rec, top, bitmap, s, np.uint64(ops[i, OP_SEQ]))


@nb.njit(inline="always", **JIT)
def _enc_lookup(buf, off, length, drop, sa, i, rec, pol_i, pol_a, flow_keys, flow_slots):
    """prepare_encrypt for packet i up to its policy (SPD) lookup: the SA slot or -1."""
    if drop[i]:
        return np.int64(-1)
    o = off[i]
    ok, ver, _hl, tot, proto, l4, _nh = parse_ip(buf, o, length[i])
    if not ok:
        return np.int64(-1)
    sport, dport = ports_of(buf, l4, o + tot, proto)
    s = np.int64(sa[i])
    if s < 0:
        s = lookup_outbound(pol_i, pol_a, flow_keys, flow_slots, buf, o, ver, proto, sport,
                            dport)
    if s < 0 or s >= rec.shape[0] or not rec[s].active or not rec[s].outbound:
        return np.int64(-1)
    return s


@nb.njit(**JIT)
def enc_upto_lookup(buf, off, length, drop, sa, n, rec, pol_i, pol_a, flow_keys, flow_slots,
                    out):
    for i in range(n):
        out[i] = _enc_lookup(buf, off, length, drop, sa, i, rec, pol_i, pol_a, flow_keys,
                             flow_slots)


@nb.njit(**JIT)
def enc_upto_seq(buf, off, length, drop, sa, n, rec, pol_i, pol_a, flow_keys, flow_slots, out):
    """Stops after taking the sequence number (advances rec.seq_out: the caller puts it
    back)."""
    for i in range(n):
        s = _enc_lookup(buf, off, length, drop, sa, i, rec, pol_i, pol_a, flow_keys,
                        flow_slots)
        if s >= 0:
            r = rec[s]
            limit = U64_MAX if r.esn else U32_MAX
            if r.seq_out >= limit or r.proto == P_AH:
                s = -1
            else:
                rec[s].seq_out = r.seq_out + np.uint64(1)
        out[i] = s


# ---------------------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------------------
def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


class StageProfile:
    """Stage timings of one engine over one batch in one direction.

    `restore` puts the batch, its SA's sequence number and replay window back as they
    were (the runner's CaseData closures); `process` is Engine.encrypt/decrypt bound to
    that batch; `workload` the packets a fresh batch is filled with for the io stage."""

    def __init__(self, engine, batch: PacketBatch, direction: str,
                 restore: Callable[[], None], workload: list[bytes]):
        self.p = Passes(engine, batch, direction)
        self.e = engine
        self.b = batch
        self.enc = direction == "encrypt"
        self.restore = restore
        self.out = np.zeros(max(batch.count, 1), np.int64)
        # the io stage: the workload as one buffer (like a ring or a socket's memory) and a
        # batch to fill from it
        self.src = np.frombuffer(b"".join(workload), np.uint8).copy()
        lens = np.array([len(x) for x in workload], np.int64)
        self.starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        self.lens = lens
        self.io = PacketBatch(len(workload), data_bytes=int(lens.sum()) + 64)

    # -- the pieces ----------------------------------------------------------------------
    def _upto_lookup(self) -> None:
        b, s = self.b, self.e.sad
        if self.enc:
            enc_upto_lookup(b.buf, b.off, b.length, b.drop, b.sa, b.count, s.rec,
                            *s.policy, self.out)
        else:
            dec_upto_lookup(b.buf, b.off, b.length, b.drop, b.count, s.rec, s.addr,
                            s.in_hash, s.encap_ports, self.out)

    def _upto_replay(self) -> None:
        b, s = self.b, self.e.sad
        if self.enc:
            enc_upto_seq(b.buf, b.off, b.length, b.drop, b.sa, b.count, s.rec, *s.policy,
                         self.out)
        else:
            dec_upto_replay(b.buf, b.off, b.length, b.drop, b.count, s.rec, s.addr,
                            s.in_hash, s.encap_ports, s.top, s.bitmap, self.out)

    def _advance(self) -> None:
        b, s = self.b, self.e.sad
        dec_replay_advance(b.drop, b.count, s.rec, s.top, s.bitmap, self.p.ops)

    def _fill(self) -> None:
        self.io.clear()
        self.io.add_many(self.src, self.starts, self.lens)

    def _whole(self) -> None:
        (self.e.encrypt if self.enc else self.e.decrypt)(self.b)

    # -- one round -----------------------------------------------------------------------
    def round(self, with_counts: bool = True) -> dict[str, float]:
        """Seconds of every piece, once; with_counts=False runs them all with count 0
        (the call costs)."""
        clock = time.perf_counter
        b, s = self.b, self.e.sad
        n = b.count
        t: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], None]) -> None:
            t0 = clock()
            fn()
            t[name] = clock() - t0

        self.restore()
        if not with_counts:
            b.count = 0
        try:
            timed("whole", self._whole)
            if with_counts:
                self.restore()
            timed("upto_lookup", self._upto_lookup)
            seq_out = s.rec["seq_out"].copy()
            timed("upto_replay", self._upto_replay)
            s.rec["seq_out"][:] = seq_out           # enc_upto_seq took numbers: give back
            timed("prepare", self.p.prepare)
            timed("crypto", self.p.crypto)
            if not self.enc:
                top, bitmap = s.top.copy(), s.bitmap.copy()
                timed("advance", self._advance)
                s.top[:] = top
                s.bitmap[:] = bitmap
            timed("finish", self.p.finish)
            if with_counts:
                timed("fill", self._fill)
            else:
                self.io.clear()
                t0 = clock()
                self.io.add_many(self.src, self.starts[:0], self.lens[:0])
                t["fill"] = clock() - t0
        finally:
            b.count = n
        if with_counts and np.any(b.drop[:n]):
            raise RuntimeError(f"profile: the staged passes dropped packets (reasons "
                               f"{sorted(set(b.drop[:n].tolist()))})")
        return t

    def measure(self, budget: float, clock_overhead: float = 0.0,
                min_rounds: int = 5) -> dict:
        """Rounds (a full one, then an empty-call one, alternating) for `budget` seconds of
        wall time; returns the profile record (ns/packet)."""
        self.round()                                 # warm-up: compile/load the kernels
        if self.io.count != len(self.lens):
            raise RuntimeError("profile: the io batch did not take the whole workload")
        self.round(False)
        full: list[dict] = []
        empty: list[dict] = []
        end = time.perf_counter() + budget
        while len(full) < min_rounds or time.perf_counter() < end:
            full.append(self.round())
            empty.append(self.round(False))
        self.restore()
        n = self.b.count
        ovh = clock_overhead

        def med(rows: list[dict], k: str) -> float:
            return max(_median([r[k] for r in rows]) - ovh, 0.0) * 1e9 / n

        T = {k: med(full, k) for k in full[0]}
        C = {k: med(empty, k) for k in empty[0]}
        return split(T, C, self.enc, len(full))


def split(T: dict, C: dict, enc: bool, rounds: int) -> dict:
    """The stages from per-packet medians of the full (T) and empty (C) runs. Every
    stage is a difference; negatives become 0 and go to clamped_ns."""
    clamped = 0.0

    def pos(x: float) -> float:
        nonlocal clamped
        if x < 0:
            clamped += -x
            return 0.0
        return x

    work = {k: T[k] - C[k] for k in T}       # each call's work without its call cost
    prepare, crypto, finish = work["prepare"], work["crypto"], work["finish"]
    lookup = pos(work["upto_lookup"])
    if enc:
        replay = pos(work["upto_replay"] - work["upto_lookup"])
        headers = pos(prepare - work["upto_replay"]) + pos(finish)
    else:
        advance = pos(work["advance"])
        replay = pos(work["upto_replay"] - work["upto_lookup"]) + advance
        headers = pos(prepare - work["upto_replay"]) + pos(finish - work["advance"])
    crypto_s = pos(crypto)
    dispatch = pos(T["whole"] - (prepare + crypto + finish))
    io = pos(T["fill"])
    stages = {"parse_lookup": lookup, "replay": replay, "crypto": crypto_s,
              "headers": headers, "dispatch": dispatch, "io": io}
    total = T["whole"] + T["fill"]
    rec: dict[str, Optional[float] | int | dict] = {f"{k}_ns": v for k, v in stages.items()}
    rec.update({
        "total_ns": total,                     # whole call + io: what the stages add up to
        "engine_ns": T["whole"],               # the whole Engine call, in these rounds
        "clamped_ns": clamped,
        "prepare_ns": T["prepare"], "crypto_pass_ns": T["crypto"], "finish_ns": T["finish"],
        "call_ns": {k: C[k] for k in ("prepare", "crypto", "finish", "whole")},
        "percent": {k: (100 * v / total if total > 0 else None) for k, v in stages.items()},
        "rounds": rounds,
    })
    return rec
