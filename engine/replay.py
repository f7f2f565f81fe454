"""Inbound anti-replay window: RFC 4303 3.4.3 + Appendix A2 (ESN), bitmap as in RFC 6479.

Per SA `s`: top[s] (uint64, highest full sequence number seen; starts at the configured
replay-seq with nothing marked), window[s] (uint32 W, exact, 0 = disabled), and a slice
bitmap[bm_base[s] : bm_base[s] + bm_words[s]] of uint64 words used as a ring. Sequence
number q lives in word (q >> 6) % bm_words, bit q & 63. q is "too old" iff top - q >= W.
All arithmetic is uint64 (Numba turns uint64 op int64 into float64, hence the casts).
"""
from __future__ import annotations

import numba as nb
import numpy as np

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_MASK32 = np.uint64(0xFFFFFFFF)


@nb.njit(cache=True, nogil=True)
def words_for_window(w):
    """RFC 6479 2: ceil(W/64) words cover the window, plus one so it slides a word at a time."""
    return np.int32((np.int64(w) + 63) // 64 + 1)


@nb.njit(cache=True, nogil=True, inline="always")
def infer_seq(top, w, esn, seq_lo):
    """Full 64-bit sequence number for the 32 bits on the wire (RFC 4303 A2.2)."""
    lo = np.uint64(seq_lo) & _MASK32
    if not esn:
        return lo
    t = np.uint64(top)
    ww = np.uint64(max(np.int64(w), 1))              # A2: inference needs W >= 1
    tl = t & _MASK32
    th = t >> np.uint64(32)
    bl = (tl + np.uint64(0x100000000) + _U1 - ww) & _MASK32  # Bl = Tl - W + 1 (mod 2^32)
    if tl >= ww - _U1:                                # Case A: window within one subspace
        if lo < bl and th != _MASK32:                 # ahead of the window: next subspace
            th = th + _U1                             # (no subspace after 2^32 - 1)
    elif lo >= bl and th != _U0:                      # Case B: left part is in Th - 1
        th = th - _U1                                 # (subspace -1 does not exist)
    return (th << np.uint64(32)) | lo


@nb.njit(cache=True, nogil=True, inline="always")
def _slot(base, words, q):
    return np.int64(base) + np.int64((q >> np.uint64(6)) % np.uint64(words))


@nb.njit(cache=True, nogil=True, inline="always")
def inferred_elsewhere(top, w, esn, seq):
    """ESN, after the ICV verified with `seq` (inferred from the window at batch start):
    would the packet's 32 bits now, after earlier packets of the batch moved `top`, be
    inferred into another 2^32 block? Processed in file order its ICV would then have been
    checked with other high bits and failed, so the caller counts it AUTH_FAILED."""
    if not esn:
        return False
    q = np.uint64(seq)
    return infer_seq(top, w, esn, q & _MASK32) != q


@nb.njit(cache=True, nogil=True, inline="always")
def check(bitmap, base, words, top, w, seq):
    """RFC 4303 3.4.3: True if seq is new (right of the window, or in it and unseen)."""
    q = np.uint64(seq)
    t = np.uint64(top)
    if q == _U0:                                      # 0 is never sent (3.3.3: first is 1)
        return False
    if q > t:
        return True
    if t - q >= np.uint64(w):                         # left of the window: too old
        return False
    return (bitmap[_slot(base, words, q)] >> (q & np.uint64(63))) & _U1 == _U0


@nb.njit(cache=True, nogil=True, inline="always")
def advance(bitmap, base, words, top_arr, s, w, seq):
    """After the ICV verified: re-check, mark seq seen, slide the window (RFC 4303 A2.1).

    Returns False if seq became too old or was seen meanwhile (duplicates within a batch).
    With w == 0 only top moves (it still drives ESN inference).
    """
    q = np.uint64(seq)
    t = top_arr[s]
    if w == 0:
        if q > t:
            top_arr[s] = q
        return True
    if not check(bitmap, base, words, t, w, q):
        return False
    if q > t:                                         # RFC 6479 3: clear the words entered
        n = (q >> np.uint64(6)) - (t >> np.uint64(6))
        if n > np.uint64(words):
            n = np.uint64(words)                      # a big jump clears the ring once
        k = t >> np.uint64(6)
        for _ in range(np.int64(n)):
            k += _U1
            bitmap[_slot(base, words, k << np.uint64(6))] = _U0
        top_arr[s] = q
    i = _slot(base, words, q)
    bitmap[i] = bitmap[i] | (_U1 << (q & np.uint64(63)))
    return True
