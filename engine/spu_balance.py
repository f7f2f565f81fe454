"""Load-aware balancing of logical SPUs: which one to move when one SPU waits for another.

Static shares cannot be right for every workload: the dispatcher's own SPU (host_spu) also
classifies every packet, and how that compares with the engine's cost depends on the
cipher, the packet size and the machine of the moment. SpuCluster(balance=...) measures,
over a window of streaming, how long each SPU was busy (a worker: inside runs; the
dispatcher's SPU: everything but waiting) and how many packets each logical SPU carried,
and asks `choose_move` whether moving one logical SPU from the busiest SPU to the least
busy one narrows the gap. The move itself is the exact-state move of add_worker (export,
install, in queue order), so per-SA order, sequence numbers and replay windows are kept.

Anti-flapping: a move must shrink the gap by at least a fifth (so one logical SPU carrying
more than the whole gap stays put), gaps under a tenth of the window are left alone, and a
logical SPU that moved stays where it went for HOLD windows (busy times are noisy: without
this, one logical SPU went back and forth between two SPUs every window).
"""
from __future__ import annotations

from typing import Collection, Optional

import numpy as np

MIN_GAP = 0.10          # busy-time gap, as a fraction of the window, worth a move
MIN_GAIN = 0.20         # the gap must shrink by at least this fraction
HOLD = 8                # windows a logical SPU stays put after a move


def choose_move(busy: dict[int, float], load: np.ndarray, owner: np.ndarray,
                window: float, hosted: Optional[int] = None,
                held: Collection[int] = ()) -> Optional[tuple[int, int, int]]:
    """(logical, from, to) to move, or None.

    busy: SPU -> seconds busy in the window; load[l]: packets logical SPU l carried;
    owner[l]: its SPU; window: the window's seconds of streaming; hosted: the dispatcher's
    SPU (its busy time includes dispatching, so packet costs come from the workers);
    held: logical SPUs that must not move now."""
    if len(busy) < 2 or window <= 0:
        return None
    hi = max(busy, key=lambda s: (busy[s], -s))
    lo = min(busy, key=lambda s: (busy[s], s))
    gap = busy[hi] - busy[lo]
    if gap < MIN_GAP * window:
        return None
    cost = _seconds_per_packet(busy, load, owner, hosted)
    if cost is None:
        return None
    mine = np.flatnonzero((owner == hi) & (load > 0))
    if held:
        mine = mine[~np.isin(mine, list(held))]
    if mine.size == 0:
        return None
    after = np.abs(gap - 2.0 * load[mine] * cost)     # the new gap, if that one moved
    best = int(np.argmin(after))
    if after[best] > (1.0 - MIN_GAIN) * gap:
        return None
    return int(mine[best]), hi, lo


def _seconds_per_packet(busy: dict[int, float], load: np.ndarray, owner: np.ndarray,
                        hosted: Optional[int]) -> Optional[float]:
    """An SPU's engine time per packet: from the workers (the hosted SPU's busy time also
    holds the dispatching), or from everyone if there is no worker with packets."""
    for pool in ([s for s in busy if s != hosted], list(busy)):
        packets = sum(float(load[owner == s].sum()) for s in pool)
        seconds = sum(busy[s] for s in pool)
        if packets > 0 and seconds > 0:
            return seconds / packets
    return None
