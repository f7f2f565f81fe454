"""SA lifetimes (RFC 7296 2.8): a soft limit that starts a rekey, a hard one that deletes.

RFC 7296 leaves lifetimes local. Like charon, the rekey comes a margin before the hard
limit, and a random part of that margin again earlier, so that two peers with the same
configuration rarely rekey the same SA at once (2.8.1 collisions stay the exception):

    hard = start + lifetime
    soft = hard - margin - jitter,  margin = lifetime / 10,  jitter uniform in [0, margin)

The same rule applies to the kilobyte limit of a Child SA, counted from the byte totals
the gateway reports (IKEConnection.child_bytes). 0 means no limit. Randomness comes from
the IKE SA's random_bytes, so tests can make it predictable.
"""
from __future__ import annotations

from typing import Callable, Optional

#: share of the lifetime between the rekey and the hard limit (charon's margintime is
#: about 10% of its default lifetimes)
REKEY_MARGIN = 0.10
#: after a refused or colliding rekey (TEMPORARY_FAILURE, 2.25), try again this much
#: later, plus up to the same again at random
RETRY_DELAY = 10.0


def fraction(random_bytes: Callable[[int], bytes]) -> float:
    """A uniform number in [0, 1) from two random bytes."""
    return int.from_bytes(random_bytes(2), "big") / 65536.0


def soft_limit(hard: float, lifetime: float, random_bytes: Callable[[int], bytes]) -> float:
    """The rekey point for a limit `hard` reached after `lifetime` (seconds or bytes)."""
    margin = lifetime * REKEY_MARGIN
    return hard - margin - margin * fraction(random_bytes)


def times(start: float, lifetime: float, random_bytes: Callable[[int], bytes]
          ) -> tuple[Optional[float], Optional[float]]:
    """(soft, hard) deadlines in seconds, (None, None) for no lifetime."""
    if lifetime <= 0:
        return None, None
    hard = start + lifetime
    return soft_limit(hard, lifetime, random_bytes), hard


def byte_limits(kilobytes: int, random_bytes: Callable[[int], bytes]) -> tuple[int, int]:
    """(soft, hard) byte counts; (0, 0) for no limit."""
    if kilobytes <= 0:
        return 0, 0
    hard = kilobytes * 1024
    return int(soft_limit(hard, hard, random_bytes)), hard


def retry_at(now: float, random_bytes: Callable[[int], bytes]) -> float:
    return now + RETRY_DELAY * (1.0 + fraction(random_bytes))
