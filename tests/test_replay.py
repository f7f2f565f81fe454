"""Anti-replay window (engine/replay.py): table-driven cases plus a model-based property test.

Also run with NUMBA_DISABLE_JIT=1: the semantics must not depend on the compiler.
"""
from __future__ import annotations

import numba as nb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.replay import advance, check, infer_seq, words_for_window

M32 = 1 << 32
ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
WINDOWS = [32, 64, 100, 1024, 4096]      # 100: the window is exact, not rounded to 64


# --------------------------------------------------------------------------------------
# Reference models (plain Python ints, no bitmaps)
# --------------------------------------------------------------------------------------
class RefWindow:
    """RFC 4303 3.4.3 as a set: seq is new iff != 0 and (> top, or top - seq < W and unseen)."""

    def __init__(self, w: int, top: int = 0):
        self.w, self.top, self.seen = w, top, set()

    def check(self, seq: int) -> bool:
        return seq != 0 and (seq > self.top or (self.top - seq < self.w and seq not in self.seen))

    def advance(self, seq: int) -> bool:
        if not self.check(seq):
            return False
        self.seen.add(seq)
        if seq > self.top:
            self.top = seq
            self.seen = {q for q in self.seen if self.top - q < self.w}
        return True


def ref_infer(top: int, w: int, esn: bool, lo: int) -> int:
    """RFC 4303 A2.2 restated: the unique seq = lo (mod 2^32) in [B, B + 2^32), B = T - W + 1,
    pulled back into [0, 2^64) when the subspace Th - 1 or Th + 1 does not exist."""
    if not esn:
        return lo
    b = top - max(w, 1) + 1
    seq = b + ((lo - b) % M32)
    if seq < 0:
        seq += M32
    if seq >= 1 << 64:
        seq -= M32
    return seq


# --------------------------------------------------------------------------------------
# One SA (index 1 of 3) in a flat bitmap with guard words on both sides of its slice
# --------------------------------------------------------------------------------------
class Sa:
    GUARD = 2

    def __init__(self, w: int, esn: bool = False, top: int = 0):
        self.w, self.esn = np.uint32(w), esn
        self.words = np.int32(words_for_window(w))
        self.base = np.int64(self.GUARD)
        self.bitmap = np.full(2 * self.GUARD + int(self.words), ONES, np.uint64)
        self.bitmap[self.GUARD:self.GUARD + int(self.words)] = 0
        self.tops = np.array([123, top, 456], np.uint64)

    @property
    def top(self) -> int:
        return int(self.tops[1])

    def infer(self, lo: int) -> int:
        return int(infer_seq(self.tops[1], self.w, self.esn, np.uint64(lo)))

    def check(self, seq: int) -> bool:
        return bool(check(self.bitmap, self.base, self.words, self.tops[1], self.w,
                          np.uint64(seq)))

    def advance(self, seq: int) -> bool:
        return bool(advance(self.bitmap, self.base, self.words, self.tops, np.int64(1), self.w,
                            np.uint64(seq)))

    def recv(self, lo: int) -> tuple[int, bool]:
        """What the engine does: infer, pre-check, (verify ICV), advance."""
        seq = self.infer(lo)
        return seq, (self.w == 0 or self.check(seq)) and self.advance(seq)

    def untouched_neighbours(self) -> bool:
        g, n = self.GUARD, int(self.words)
        return (bool((self.bitmap[:g] == ONES).all() and (self.bitmap[g + n:] == ONES).all())
                and int(self.tops[0]) == 123 and int(self.tops[2]) == 456)


# --------------------------------------------------------------------------------------
# words_for_window
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("w, words", [
    (0, 1),        # disabled: formula still gives one (unused) word
    (1, 2),
    (32, 2),       # ceil(32/64) + 1
    (64, 2),
    (65, 3),       # one bit more than a word needs a second window word
    (100, 3),
    (1024, 17),
    (4096, 65),
])
def test_words_for_window(w, words):
    assert int(words_for_window(w)) == words


# --------------------------------------------------------------------------------------
# infer_seq: RFC 4303 A2.2 (hand-computed values)
# --------------------------------------------------------------------------------------
H = lambda th, tl: (th << 32) | tl   # noqa: E731  full sequence number from (Seqh, Seql)

INFER_CASES = [
    # (top, w, esn, seq_lo, expected)
    # ESN off: the 32 wire bits are the sequence number, whatever top is
    (H(5, 7), 64, False, 3, 3),
    (0, 64, False, 0xFFFFFFFF, 0xFFFFFFFF),
    # Case A (Tl >= W-1): Bl = 1000 - 63 = 937
    (H(3, 1000), 64, True, 990, H(3, 990)),        # inside the window -> Th
    (H(3, 1000), 64, True, 937, H(3, 937)),        # exactly Bl -> Th
    (H(3, 1000), 64, True, 936, H(4, 936)),        # below Bl -> next subspace Th+1
    (H(3, 1000), 64, True, 2000, H(3, 2000)),      # ahead of top, same subspace
    (H(3, 63), 64, True, 0, H(3, 0)),              # Tl == W-1 is still Case A, Bl = 0
    (H(0, 1000), 64, True, 5, H(1, 5)),            # Th == 0 Case A: low values go forward
    # Case B (Tl < W-1): Bl = 10 - 63 mod 2^32 = 2^32 - 53
    (H(3, 10), 64, True, M32 - 53, H(2, M32 - 53)),  # exactly Bl -> Th-1 (window's left part)
    (H(3, 10), 64, True, M32 - 1, H(2, M32 - 1)),    # top of previous subspace -> Th-1
    (H(3, 10), 64, True, M32 - 54, H(3, M32 - 54)),  # below Bl -> Th (far ahead)
    (H(3, 10), 64, True, 5, H(3, 5)),                # inside window, current subspace
    (H(3, 10), 64, True, 11, H(3, 11)),              # just ahead of top
    (H(1, 62), 64, True, M32 - 1, H(0, M32 - 1)),    # Tl == W-2 -> Case B, Bl = 2^32-1
    (H(1, 62), 64, True, 0, H(1, 0)),
    # Th == 0 clamp: the rule says Th-1 = -1, which does not exist -> Th
    (H(0, 10), 64, True, M32 - 53, H(0, M32 - 53)),
    (H(0, 0), 32, True, M32 - 1, H(0, M32 - 1)),     # fresh SA, top 0
    (H(0, 0), 32, True, 1, 1),                       # fresh SA, first packet
    # Th == 2^32-1: no subspace after it, stays Th (then rejected as too old)
    (H(0xFFFFFFFF, 1000), 64, True, 5, H(0xFFFFFFFF, 5)),
    # W = 0 (anti-replay off) infers with W = 1: Bl = Tl
    (H(2, 5), 0, True, 5, H(2, 5)),
    (H(2, 5), 0, True, 4, H(3, 4)),
    (H(2, 0), 0, True, 7, H(2, 7)),                  # Tl = 0 >= W-1 = 0: Case A, Bl = 0
    # the 2^32 boundary example of the brief
    (M32 - 10, 64, True, 5, M32 + 5),
    (M32 - 10, 64, True, M32 - 20, M32 - 20),
]


@pytest.mark.parametrize("top, w, esn, lo, expected", INFER_CASES)
def test_infer_seq(top, w, esn, lo, expected):
    got = int(infer_seq(np.uint64(top), np.uint32(w), esn, np.uint64(lo)))
    assert got == expected
    assert ref_infer(top, w, esn, lo) == expected      # the model agrees with the RFC text


# --------------------------------------------------------------------------------------
# Receive sequences: (case name, esn, initial top, [(seq_lo, accepted[, inferred seq])])
# built per window size W
# --------------------------------------------------------------------------------------
def scenarios(w: int):
    big = 10 * w
    return [
        # first packet of a fresh SA, then its duplicate
        ("first", False, 0, [(1, True), (1, False)]),
        # 0 is never a valid sequence number (RFC 4303 3.3.3: the first one sent is 1)
        ("zero", False, 0, [(0, False), (1, True), (0, False)]),
        # in order over several window lengths: every packet accepted exactly once
        ("in-order", False, 0, [(q, True) for q in range(1, 3 * w + 1)]),
        # duplicates of the top, inside the window, and out of order within it
        ("duplicates", False, 0,
         [(5, True), (5, False), (3, True), (4, True), (3, False), (5, False), (6, True)]),
        # left edge: top T; T-W+1 is the last number inside the window, T-W the first outside
        ("left-edge", False, 0,
         [(big, True), (big - w + 1, True), (big - w, False), (big - w + 1, False),
          (big - w + 2, True)]),
        # the edge moves with top: after T+1, old T-W+1 becomes too old
        ("edge-moves", False, 0,
         [(big, True), (big + 1, True), (big - w + 1, False), (big - w + 2, True)]),
        # jump by more than the window: every earlier number is too old, the new window empty
        ("jump>W", False, 0,
         [(10, True), (11, True), (10 + 3 * w, True), (10, False), (11, False),
          (10 + 2 * w + 1, True), (10 + 2 * w, False), (10 + 3 * w - 1, True)]),
        # jump by exactly W: the old top falls out, T+1..T+W-1 are all new
        ("jump=W", False, 0,
         [(100, True), (100 + w, True), (100, False), (101, True), (99 + w, True)]),
        # a jump to the end of the 32-bit space without ESN
        ("jump-to-2^32-1", False, 0,
         [(1, True), (M32 - 1, True), (M32 - w, True), (M32 - w - 1, False), (1, False),
          (M32 - 1, False)]),
        # replay-seq: initial top 10W with nothing seen; seq <= top inside the window is
        # accepted once (including top itself), older is rejected
        ("initial-top", False, big,
         [(big, True), (big, False), (big - w + 1, True), (big - w, False),
          (big - 1, True), (big - 1, False), (big + 1, True), (big - w + 1, False)]),
        # initial top smaller than the window: numbers down to 1 are inside
        ("initial-top<W", False, 3, [(1, True), (3, True), (2, True), (1, False), (0, False)]),
        # ESN fresh SA behaves like 32-bit at first; full 0 is rejected
        ("esn-first", True, 0, [(0, False, 0), (1, True, 1), (1, False, 1), (2, True, 2)]),
        # ESN across 2^32: top = 2^32-10, low values are the next subspace; then stragglers
        # from before the wrap are inferred in Th-1 (RFC 4303 A2.2 Case B) and accepted once
        ("esn-wrap", True, M32 - 10,
         [(5, True, M32 + 5), (M32 - 12, True, M32 - 12), (M32 - 12, False, M32 - 12),
          (M32 - 10, True, M32 - 10), (M32 + 6 - w, True, M32 + 6 - w), (0, True, M32),
          (0, False, M32), (6, True, M32 + 6)]),
        # ESN in-order through the wrap: 2^32-2, 2^32-1, 2^32, 2^32+1
        ("esn-in-order-wrap", True, M32 - 3,
         [(M32 - 2, True, M32 - 2), (M32 - 1, True, M32 - 1), (0, True, M32),
          (1, True, M32 + 1), (M32 - 1, False, M32 - 1)]),
        # ESN big forward jump inside subspace 0 (Case B with Th == 0: clamp keeps Th = 0)
        ("esn-jump-in-subspace-0", True, 5,
         [(1 << 31, True, 1 << 31), (5, True, M32 + 5)]),
        # ESN with a large top: everything happens in subspace 7
        ("esn-high", True, H(7, 1 << 20),
         [(1 << 20, True, H(7, 1 << 20)), ((1 << 20) + 1, True, H(7, (1 << 20) + 1)),
          ((1 << 20) - w + 2, True, H(7, (1 << 20) - w + 2)),   # left edge, inside
          ((1 << 20) - w + 2, False, H(7, (1 << 20) - w + 2)),
          # one below the left edge: A2.2 puts it in Th+1 (far ahead), so the replay check
          # passes; only the ICV check (computed with that Seqh) rejects such a packet
          ((1 << 20) - w + 1, True, H(8, (1 << 20) - w + 1))]),
    ]


SCENARIOS = [(w, *sc) for w in WINDOWS for sc in scenarios(w)]


@pytest.mark.parametrize("w, name, esn, top, ops", SCENARIOS,
                         ids=[f"W{c[0]}-{c[1]}" for c in SCENARIOS])
def test_scenario(w, name, esn, top, ops):
    sa, ref = Sa(w, esn, top), RefWindow(w, top)
    for i, (lo, accept, *seq) in enumerate(ops):
        got_seq, got = sa.recv(lo)
        if seq:
            assert got_seq == seq[0], f"op {i}: seq_lo {lo:#x} inferred {got_seq:#x}"
        assert got == accept, f"op {i}: seq {got_seq:#x}"
        assert ref.advance(got_seq) == accept, f"op {i}: model disagrees with the table"
        assert sa.top == ref.top
    assert sa.untouched_neighbours()


# --------------------------------------------------------------------------------------
# Direct check/advance with full 64-bit numbers (what the engine passes after inference)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("w", WINDOWS)
def test_jump_beyond_2_32(w):
    # a jump by more than 2^32 clears the ring once (bounded loop) and moves top
    sa = Sa(w, True, 0)
    for q in range(1, w + 1):
        assert sa.advance(q)
    far = 100 + M32 + 7
    assert sa.check(far) and sa.advance(far) and sa.top == far
    assert not sa.check(w) and not sa.advance(w)                 # too old now
    assert sa.check(far - w + 1) and not sa.check(far - w)       # window is empty, exact
    assert not sa.advance(far)                                   # the jump itself is seen
    ring = sa.bitmap[Sa.GUARD:Sa.GUARD + int(sa.words)]
    assert sum(bin(int(x)).count("1") for x in ring) == 1         # only its bit is set
    assert sa.untouched_neighbours()


@pytest.mark.parametrize("w", WINDOWS)
def test_esn_too_old_by_full_number(w):
    # with ESN a too-old Seql is inferred into the next subspace (A2.2), so "too old" is
    # only ever seen as a full number; check it at both edges across the 2^32 boundary
    sa = Sa(w, True, M32 + 5)
    assert sa.infer((M32 + 5 - w) % M32) == 2 * M32 + 5 - w
    assert not sa.check(M32 + 5 - w) and not sa.advance(M32 + 5 - w)
    assert sa.check(M32 + 6 - w) and sa.advance(M32 + 6 - w) and sa.top == M32 + 5


def test_full_zero_rejected_and_near_max():
    sa = Sa(64, True, 0)
    assert not sa.check(0) and not sa.advance(0) and sa.top == 0
    top = (1 << 64) - 2
    sa = Sa(64, True, top)
    assert sa.advance(top + 1) and sa.top == (1 << 64) - 1
    assert not sa.advance(top + 1)
    assert sa.advance(top - 62) and not sa.advance(top - 63)     # W = 64 below 2^64 - 1


def test_window_disabled_advance_moves_top_only():
    # w == 0: the caller skips check; advance still tracks top for ESN inference
    sa = Sa(0, True, M32 - 10)
    assert sa.advance(M32 + 5) and sa.top == M32 + 5
    assert sa.advance(M32 + 5) and sa.advance(3) and sa.top == M32 + 5
    assert sa.infer(7) == M32 + 7


# --------------------------------------------------------------------------------------
# Called from inside another njit function, as the batch kernels do
# --------------------------------------------------------------------------------------
@nb.njit(nogil=True)
def _rx_batch(bitmap, bm_base, bm_words, top, window, esn, sa, seq_lo, ok):
    n = sa.shape[0]
    full = np.empty(n, np.uint64)
    for i in range(n):                       # pre-check: reads state only
        s = sa[i]
        full[i] = infer_seq(top[s], window[s], esn[s], seq_lo[i])
        ok[i] = window[s] == 0 or check(bitmap, bm_base[s], bm_words[s], top[s], window[s],
                                        full[i])
    for i in range(n):                       # (ICV verified here) in-order post pass
        if ok[i]:
            s = sa[i]
            ok[i] = advance(bitmap, bm_base[s], bm_words[s], top, s, window[s], full[i])
    return full


def test_from_njit_batch():
    window = np.array([32, 100], np.uint32)
    esn = np.array([False, True])
    bm_words = np.array([words_for_window(w) for w in window], np.int32)
    bm_base = np.array([0, bm_words[0]], np.int64)
    bitmap = np.zeros(int(bm_words.sum()), np.uint64)
    top = np.array([0, M32 - 10], np.uint64)
    sa = np.array([0, 0, 1, 0, 1, 0, 1, 0, 0], np.int64)
    lo = np.array([1, 2, 5, 2, 5, 100, M32 - 12, 50, 90], np.uint64)
    ok = np.zeros(sa.shape[0], np.bool_)
    full = _rx_batch(bitmap, bm_base, bm_words, top, window, esn, sa, lo, ok)
    assert full.tolist() == [1, 2, M32 + 5, 2, M32 + 5, 100, M32 - 12, 50, 90]
    # dups within the batch pass the pre-check, the post pass rejects them;
    # 50 passed the pre-check (top was 2) but 100 arrived first, so it's too old for W=32
    assert ok.tolist() == [True, True, True, False, False, True, True, False, True]
    assert top.tolist() == [100, M32 + 5]


# --------------------------------------------------------------------------------------
# Property: random traffic against the set model
# --------------------------------------------------------------------------------------
@st.composite
def traffic(draw):
    w = draw(st.one_of(st.sampled_from(WINDOWS), st.integers(1, 300)))
    esn = draw(st.booleans())
    top0 = draw(st.one_of(st.just(0), st.integers(0, 3 * w),
                          st.integers(M32 - 3 * w, M32 + 3 * w) if esn
                          else st.integers(M32 - 3 * w, M32 - 1)))
    ops = draw(st.lists(st.tuples(
        st.sampled_from(["recv", "recv", "recv", "advance"]),   # advance = pre-checked dup
        st.one_of(st.integers(-2 * w - 3, 2 * w + 3), st.integers(-M32, M32),
                  st.sampled_from([0, 1, -1, w, -w, w - 1, 1 - w, 64, -64]))),
        max_size=60))
    return w, esn, top0, ops


@settings(max_examples=300, deadline=None)
@given(traffic())
def test_matches_model(case):
    w, esn, top0, ops = case
    sa, ref = Sa(w, esn, top0), RefWindow(w, top0)
    for kind, delta in ops:
        target = max(ref.top + delta, 0)
        lo = target % M32
        seq = sa.infer(lo)
        assert seq == ref_infer(ref.top, w, esn, lo)
        if kind == "recv":
            assert sa.check(seq) == ref.check(seq)
            assert (sa.check(seq) and sa.advance(seq)) == ref.advance(seq)
        else:
            assert sa.advance(seq) == ref.advance(seq)
        assert sa.top == ref.top
    # the whole window, and one past each edge, agree with the model
    for q in range(max(ref.top - w, 0), ref.top + 2):
        assert sa.check(q) == ref.check(q), q
    assert sa.untouched_neighbours()
